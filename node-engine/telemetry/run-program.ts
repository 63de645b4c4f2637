import { spawn } from 'node:child_process';
import { DeadlineError } from '../deadline.js';

/** More output than this is cut: a collector's answer is a few lines. */
const MAX_OUTPUT_BYTES = 1 << 20;

/**
 * Runs a program (nvidia-smi, a sensor command) and resolves with its stdout once it exits 0. When `signal` fires
 * (its deadline), the program and everything it started are killed with SIGKILL at once (a wedged driver call
 * ignores SIGTERM) and the promise rejects without waiting for pipes that a stuck child may hold open.
 */
export function runProgram(binary: string, args: string[], signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    // Its own process group, so that the kill reaches whatever it forked.
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
    const chunks: Buffer[] = [];
    let size = 0;
    const onAbort = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
      child.stdout.destroy();
      reject(signal.reason instanceof Error ? signal.reason : new DeadlineError(`${binary} did not answer`));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    child.stdout.on('data', (chunk: Buffer) => {
      if (size < MAX_OUTPUT_BYTES) chunks.push(chunk);
      size += chunk.length;
    });
    child.on('error', (error) => {
      signal.removeEventListener('abort', onAbort);
      reject(error);
    });
    child.on('close', (code, killed) => {
      signal.removeEventListener('abort', onAbort);
      if (code === 0) resolve(Buffer.concat(chunks).toString('utf8'));
      else reject(new Error(`${binary} exited with ${code ?? killed}`));
    });
  });
}
