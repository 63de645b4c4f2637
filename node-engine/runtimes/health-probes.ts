import { spawn } from 'node:child_process';
import { request } from 'node:http';

/** How much of a failing check's output is kept for the instance's detail. */
const OUTPUT_KEPT = 512;

/** The last line a failing check printed, clipped: what an operator reads first. */
export function lastLine(output: string): string {
  const line =
    output
      .trim()
      .split('\n')
      .filter((text) => text.trim().length > 0)
      .at(-1) ?? '';
  return line.length > 200 ? `${line.slice(0, 199)}…` : line;
}

/**
 * `GET http://host:port/path` with a deadline: null when it answers 2xx or 3xx, else why not. node:http, not
 * fetch: undici would cost the node engine memory it counts.
 */
export function probeHttp(
  host: string,
  port: number,
  path: string,
  timeoutMs: number,
): Promise<string | null> {
  const url = `http://${host}:${port}${path}`;
  return new Promise((resolve) => {
    const req = request({ host, port, path, method: 'GET', timeout: timeoutMs }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      resolve(status >= 200 && status < 400 ? null : `GET ${url} answered ${status}`);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (error: NodeJS.ErrnoException) => resolve(`GET ${url}: ${error.code ?? error.message}`));
    req.end();
  });
}

/**
 * Runs a check command on the host with a deadline (it is killed at the deadline): null when it exits 0, else
 * why not, with the last line it printed.
 */
export function probeCommand(
  argv: string[],
  options: { env: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number },
): Promise<string | null> {
  return new Promise((resolve) => {
    let output = '';
    const child = spawn(argv[0]!, argv.slice(1), {
      env: options.env,
      ...(options.cwd ? { cwd: options.cwd } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_KEPT);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve(`cannot run ${argv[0]}: ${error.message}`);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') resolve(`no answer within ${options.timeoutMs} ms`);
      else if (code === 0) resolve(null);
      else resolve(`exit ${code ?? signal}${lastLine(output) ? `: ${lastLine(output)}` : ''}`);
    });
  });
}
