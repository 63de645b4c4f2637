import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';

export class JobFileError extends Error {
  override name = 'JobFileError';
}

/**
 * Reads a job spec from a YAML or JSON file, or from stdin for `-`. YAML is a superset of JSON, so one
 * parser reads both. The spec is not validated here: the cluster manager does, and names each bad field.
 */
export async function readJobFile(path: string, readStdin: () => Promise<string>): Promise<unknown> {
  const source = path === '-' ? 'stdin' : path;
  let text: string;
  try {
    text = path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new JobFileError(
      `cannot read ${source}: ${code === 'ENOENT' ? 'no such file' : (error as Error).message}`,
    );
  }
  if (text.trim() === '') throw new JobFileError(`${source} is empty: expected a job spec in YAML or JSON`);
  let spec: unknown;
  try {
    spec = parse(text);
  } catch (error) {
    throw new JobFileError(`${source} is neither YAML nor JSON: ${(error as Error).message.split('\n')[0]}`);
  }
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) {
    throw new JobFileError(`${source} must hold one job spec (an object with at least name and image)`);
  }
  return spec;
}

export async function readAllStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
