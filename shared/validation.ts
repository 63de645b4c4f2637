import type { z } from 'zod';

export interface FieldProblem {
  path: string;
  message: string;
}

/** `resources.cpus`, `ports[0].host`: field paths as a user writes them. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || '(body)';
}

/** One problem per bad field; an unknown key is named itself (`resources.cpu: unknown field`). */
export function fieldProblems(error: z.ZodError): FieldProblem[] {
  return error.issues.flatMap((issue) =>
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((key) => ({ path: formatPath([...issue.path, key]), message: 'unknown field' }))
      : [{ path: formatPath(issue.path), message: issue.message }],
  );
}

/** One line naming every bad field, for logs and error messages. */
export function describeProblems(error: z.ZodError): string {
  return fieldProblems(error)
    .map((p) => `${p.path}: ${p.message}`)
    .join('; ');
}

/** Parses JSON text; returns undefined for anything that is not JSON. */
export function parseJson(text: string | Buffer): unknown {
  try {
    return JSON.parse(text.toString());
  } catch {
    return undefined;
  }
}
