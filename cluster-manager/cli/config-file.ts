import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../../shared/index.js';

/**
 * edgectl's config file: named contexts (a cluster manager, the CA to verify it with, a token or the file that
 * holds one) and the current one, so that a token need not be given to every command.
 *
 *   {"currentContext": "local",
 *    "contexts": {"local": {"server": "https://127.0.0.1:10100", "caFile": "/…/ca.pem", "tokenFile": "/…/api-token"}}}
 */

/** A bad config file: unreadable, not JSON, a field that does not fit, or readable by others with a secret. */
export class ConfigFileError extends Error {
  override name = 'ConfigFileError';
}

export const CONTEXT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

const ContextSchema = z
  .object({
    server: z.url({
      protocol: /^https?$/,
      error: (issue) => (issue.input === undefined ? 'missing' : 'must be an http(s) URL'),
    }),
    caFile: z.string().min(1).optional(),
    token: z.string().min(1).optional(),
    tokenFile: z.string().min(1).optional(),
  })
  .strict()
  .refine((context) => !(context.token && context.tokenFile), {
    error: 'both token and tokenFile: keep one',
  });
export type EdgectlContext = z.infer<typeof ContextSchema>;

const ConfigSchema = z
  .object({
    currentContext: z.string().optional(),
    contexts: z.record(z.string().regex(CONTEXT_NAME), ContextSchema).default({}),
  })
  .strict();
export type EdgectlConfig = z.infer<typeof ConfigSchema>;

/** Where the config file is: $EDGECTL_CONFIG, else $XDG_CONFIG_HOME/edgectl, else ~/.config/edgectl; none without a home. */
export function configPath(env: NodeJS.ProcessEnv): string | undefined {
  if (env.EDGECTL_CONFIG) return env.EDGECTL_CONFIG;
  const base = env.XDG_CONFIG_HOME || (env.HOME ? join(env.HOME, '.config') : undefined);
  return base ? join(base, 'edgectl', 'config.json') : undefined;
}

/** What a config file holds, with its path, and a warning to print when it is readable by others. */
export interface LoadedConfig {
  path: string | undefined;
  config: EdgectlConfig;
  warning?: string;
}

/**
 * Reads the config file; a missing one is an empty config. It holds secrets (or where they are), so a file
 * others may write is refused, as is one others may read with a token in it; one others may only read warns.
 */
export function loadConfig(env: NodeJS.ProcessEnv): LoadedConfig {
  const path = configPath(env);
  if (!path) return { path, config: { contexts: {} } };
  let text: string;
  let mode: number;
  try {
    mode = statSync(path).mode;
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { path, config: { contexts: {} } };
    throw new ConfigFileError(`cannot read the config file ${path}: ${code ?? (error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ConfigFileError(`the config file ${path} is not JSON: ${(error as Error).message}`);
  }
  const parsed = ConfigSchema.safeParse(json);
  if (!parsed.success) {
    throw new ConfigFileError(`the config file ${path}: ${describeIssue(parsed.error.issues[0]!)}`);
  }
  const config = parsed.data;
  const permissions = (mode & 0o777).toString(8).padStart(3, '0');
  const fix = `chmod 600 ${path}`;
  if (mode & 0o022)
    throw new ConfigFileError(
      `the config file ${path} may be changed by others (mode ${permissions}): ${fix}`,
    );
  if (mode & 0o044) {
    const withToken = Object.entries(config.contexts).find(([, context]) => context.token);
    if (withToken)
      throw new ConfigFileError(
        `the config file ${path} holds the token of context ${withToken[0]} and others may read it (mode ${permissions}): ${fix}`,
      );
    return {
      path,
      config,
      warning: `the config file ${path} may be read by others (mode ${permissions}): ${fix}`,
    };
  }
  return { path, config };
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String);
  if (issue.code === 'invalid_key')
    return `${path.slice(0, -1).join('.')}: "${path.at(-1)}" is not a context name (letters, digits, . _ -)`;
  const where = path.length > 0 ? path.join('.') : 'its top level';
  if (issue.code === 'unrecognized_keys') return `${where}: unknown field "${issue.keys.join('", "')}"`;
  return `${where}: ${issue.message}`;
}

/** Writes the config file readable by its owner only (its folder made too, for the owner only). */
export async function saveConfig(path: string, config: EdgectlConfig): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, `${JSON.stringify(config, null, 2)}\n`, 0o600);
}
