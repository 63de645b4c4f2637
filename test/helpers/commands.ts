import type { Command } from '../../shared/index.js';

let counter = 0;

/** A command for the desired state's own tests: only the fields it reads are real; each gets a new id. */
export function stateCommand(
  kind: Command['command'],
  generation: number,
  instance = 0,
  jobId = 'j1',
): Command {
  return {
    id: `c${++counter}`,
    command: kind,
    job: { id: jobId, name: 'web', image: 'edge/busybox:latest' } as Command['job'],
    instance,
    generation,
    cluster: [],
    worker: [],
    issuedAt: 0,
  };
}
