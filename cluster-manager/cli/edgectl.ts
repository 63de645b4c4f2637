#!/usr/bin/env node
import { readAllStdin } from './job-file.js';
import { runEdgectl } from './program.js';

process.exitCode = await runEdgectl(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  env: process.env,
  readStdin: readAllStdin,
  now: Date.now,
});
