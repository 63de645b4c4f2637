import { describe, expect, it } from 'vitest';
import {
  countsTowardsReplicas,
  expectedOnNode,
  holdsResources,
  type InstanceMessage,
  transition,
} from '../../cluster-manager/jobs/instance-states.js';
import { INSTANCE_STATUSES, type InstanceStatus } from '../../shared/index.js';

/** `-`: ignored; `x`: the row is removed; a status: the instance takes it. */
type Outcome = InstanceStatus | '-' | 'x';
const outcome = (current: InstanceStatus, message: InstanceMessage): Outcome => {
  const next = transition(current, message);
  return 'status' in next ? next.status : 'remove' in next ? 'x' : '-';
};

/** Every message (rows) against every status (columns, in INSTANCE_STATUSES order). */
const COLUMNS = INSTANCE_STATUSES;
//                                       pending    scheduled  pulling    creating   running    exited     failed     stopping   stopped  lost
// biome-ignore format: a table reads as one
const TABLE: [string, InstanceMessage, Outcome[]][] = [
  ['report running', { kind: 'report', status: 'running' },
    ['-', 'running', 'running', 'running', '-', 'running', 'running', '-', '-', 'running']],
  ['report exited', { kind: 'report', status: 'exited' },
    ['-', 'exited', 'exited', 'exited', 'exited', '-', 'exited', '-', '-', 'exited']],
  ['report failed', { kind: 'report', status: 'failed' },
    ['-', 'failed', 'failed', 'failed', 'failed', 'failed', '-', '-', '-', 'failed']],
  ['report stopped', { kind: 'report', status: 'stopped' },
    ['-', 'stopped', 'stopped', 'stopped', 'stopped', 'stopped', 'stopped', 'stopped', '-', 'stopped']],
  ['report stopping', { kind: 'report', status: 'stopping' },
    ['-', '-', '-', '-', '-', '-', '-', '-', '-', '-']],
  ['listed running', { kind: 'listed', status: 'running' },
    ['-', 'running', 'running', 'running', '-', 'running', 'running', '-', '-', 'running']],
  ['listed exited', { kind: 'listed', status: 'exited' },
    ['-', 'exited', 'exited', 'exited', 'exited', '-', 'exited', '-', '-', 'exited']],
  ['node offline', { kind: 'nodeOffline' },
    ['-', 'lost', 'lost', 'lost', 'lost', 'lost', '-', '-', '-', '-']],
  ['stop asked', { kind: 'stopAsked' },
    ['stopping', 'stopping', 'stopping', 'stopping', 'stopping', 'stopping', 'stopping', '-', '-', 'stopping']],
  ['command refused', { kind: 'refused' },
    ['-', 'failed', 'failed', 'failed', 'failed', 'failed', '-', '-', '-', 'failed']],
  ['delete acked', { kind: 'deleteAcked' },
    ['-', '-', '-', '-', '-', '-', '-', 'x', 'x', '-']],
  ['node removed', { kind: 'nodeRemoved', mayRunAgain: true },
    ['-', 'pending', 'pending', 'pending', 'pending', 'pending', 'pending', 'x', 'x', 'pending']],
  ['node removed, restart never', { kind: 'nodeRemoved', mayRunAgain: false },
    ['-', 'pending', 'pending', 'pending', 'pending', 'pending', '-', 'x', 'x', 'pending']],
];

describe('the instance state machine', () => {
  for (const [name, message, expected] of TABLE) {
    it(`${name}: ${COLUMNS.map((status, i) => `${status}->${expected[i]}`).join(' ')}`, () => {
      expect(COLUMNS.map((status) => outcome(status, message))).toEqual(expected);
    });
  }

  it('a stopped report before the delete ack leaves nothing behind (the row goes on the ack)', () => {
    const stopped = transition('stopping', { kind: 'report', status: 'stopped' });
    expect(stopped).toEqual({ status: 'stopped' });
    expect(transition('stopped', { kind: 'deleteAcked' })).toEqual({ remove: true });
    expect(countsTowardsReplicas('stopped')).toBe(false);
    // Telemetry listing it as still running does not bring it back.
    expect(transition('stopped', { kind: 'listed', status: 'running' })).toEqual({ ignore: true });
  });

  it('says what counts towards replicas, holds resources and must be listed by its node', () => {
    const counted = COLUMNS.filter(countsTowardsReplicas);
    expect(counted).toEqual([
      'pending',
      'scheduled',
      'pulling',
      'creating',
      'running',
      'exited',
      'failed',
      'lost',
    ]);
    const holding = COLUMNS.filter((status) => holdsResources({ nodeId: 'n', status }));
    expect(holding).toEqual(['scheduled', 'pulling', 'creating', 'running', 'exited', 'stopping', 'lost']);
    expect(holdsResources({ nodeId: null, status: 'running' })).toBe(false);
    expect(COLUMNS.filter(expectedOnNode)).toEqual([
      'scheduled',
      'pulling',
      'creating',
      'running',
      'exited',
      'lost',
    ]);
  });
});
