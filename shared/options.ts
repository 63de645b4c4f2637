import { parseArgs } from 'node:util';

/** One flag of a program: its env var, default and how to read it. */
export interface OptionSpec {
  env?: string;
  description: string;
  type: 'string' | 'integer' | 'boolean';
  default?: string | number | boolean;
}

export type OptionSpecs = Record<string, OptionSpec>;

type ValueOf<S extends OptionSpec> = S['type'] extends 'integer'
  ? number
  : S['type'] extends 'boolean'
    ? boolean
    : string;
export type ParsedOptions<S extends OptionSpecs> = {
  [K in keyof S]: S[K]['default'] extends undefined ? ValueOf<S[K]> | undefined : ValueOf<S[K]>;
};

export class UsageError extends Error {
  override name = 'UsageError';
}

/** Flags win over env vars, env vars over defaults. Throws UsageError on anything it cannot read. */
export function parseOptions<S extends OptionSpecs>(
  specs: S,
  argv: string[],
  env: NodeJS.ProcessEnv,
): ParsedOptions<S> & { help: boolean } {
  const options: Record<string, { type: 'string' | 'boolean' }> = { help: { type: 'boolean' } };
  for (const [flag, spec] of Object.entries(specs)) {
    options[flag] = { type: spec.type === 'boolean' ? 'boolean' : 'string' };
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }) as {
      values: Record<string, string | boolean | undefined>;
    });
  } catch (error) {
    throw new UsageError((error as Error).message.split('\n')[0] ?? 'bad arguments');
  }
  const result: Record<string, unknown> = { help: values.help === true };
  for (const [flag, spec] of Object.entries(specs)) {
    const raw = values[flag] ?? (spec.env ? env[spec.env] : undefined);
    if (raw === undefined || raw === '') {
      result[flag] = spec.default;
      continue;
    }
    if (spec.type === 'integer') {
      const text = String(raw);
      if (!/^\d+$/.test(text)) throw new UsageError(`--${flag} must be a whole number, got "${text}"`);
      result[flag] = Number(text);
    } else if (spec.type === 'boolean') {
      result[flag] = raw === true || raw === 'true' || raw === '1';
    } else {
      result[flag] = String(raw);
    }
  }
  return result as ParsedOptions<S> & { help: boolean };
}

export function formatHelp(program: string, summary: string, specs: OptionSpecs): string {
  const lines = [`Usage: ${program} [options]`, '', summary, '', 'Options:'];
  for (const [flag, spec] of Object.entries(specs)) {
    const value = spec.type === 'boolean' ? '' : ' <value>';
    const extras = [
      spec.env ? `env ${spec.env}` : '',
      spec.default !== undefined ? `default ${spec.default}` : '',
    ]
      .filter(Boolean)
      .join(', ');
    lines.push(`  --${flag}${value}`.padEnd(34) + spec.description + (extras ? ` (${extras})` : ''));
  }
  lines.push(`${'  --help'.padEnd(34)}show this help`);
  return lines.join('\n');
}

/**
 * Parses a program's flags the way every program of the project does: `--help` prints help and exits 0,
 * a bad flag prints one line and exits 2.
 */
export function readProgramOptions<S extends OptionSpecs>(program: string, summary: string, specs: S) {
  try {
    const parsed = parseOptions(specs, process.argv.slice(2), process.env);
    if (parsed.help) {
      process.stdout.write(`${formatHelp(program, summary, specs)}\n`);
      process.exit(0);
    }
    return parsed;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`${program}: ${error.message} (see --help)\n`);
      process.exit(2);
    }
    throw error;
  }
}
