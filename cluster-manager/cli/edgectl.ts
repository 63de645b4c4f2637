#!/usr/bin/env node
import { once } from 'node:events';
import { readAllStdin } from './job-file.js';
import { runEdgectl } from './program.js';

// Its reader went away (`edgectl logs -f | head`): nothing more to say, and no stack trace for it.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(process.exitCode ?? 0);
});

process.exitCode = await runEdgectl(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  env: process.env,
  readStdin: readAllStdin,
  now: Date.now,
  stdoutDrained: async () => {
    if (process.stdout.writableNeedDrain) await once(process.stdout, 'drain');
  },
});
