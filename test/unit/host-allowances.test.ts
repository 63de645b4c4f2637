import { describe, expect, it } from 'vitest';
import { checkHostAllowances } from '../../cluster-manager/scheduler/feasibility.js';
import type { SchedulableNode } from '../../cluster-manager/scheduler/types.js';
import { buildConfig, optionSpecs } from '../../node-engine/config.js';
import { asUser, resolveRunAs } from '../../node-engine/runtimes/native-user.js';
import { type JobDefinition, parseOptions, pathAllowed, refusedByAllowances } from '../../shared/index.js';

describe('host allowances (--allow-native, --allow-device)', () => {
  it('matches exact paths and folders ending in /, never a path that walks out of one', () => {
    const allowed = ['/usr/local/bin/agent', '/opt/edge/', '/dev/ttyUSB0'];
    expect(pathAllowed(allowed, '/usr/local/bin/agent')).toBe(true);
    expect(pathAllowed(allowed, '/opt/edge/bin/run')).toBe(true);
    expect(pathAllowed(allowed, '/opt/edge/../../bin/sh')).toBe(false);
    expect(pathAllowed(allowed, '/opt/edge//x')).toBe(false);
    expect(pathAllowed(allowed, '/opt/edgex')).toBe(false);
    expect(pathAllowed(allowed, '/usr/local/bin/agent2')).toBe(false);
    expect(pathAllowed([], '/bin/sh')).toBe(false);
    const job = { technology: 'docker', image: 'edge/busybox', devices: ['/dev/ttyUSB0'] };
    expect(refusedByAllowances(job, { native: [], devices: allowed })).toBeNull();
    expect(refusedByAllowances({ ...job, devices: ['/dev/mem'] }, { native: [], devices: allowed })).toBe(
      'device /dev/mem not allowed (--allow-device)',
    );
    expect(
      refusedByAllowances(
        { ...job, technology: 'native', image: '/bin/sh', devices: [] },
        { native: allowed, devices: [] },
      ),
    ).toBe('native /bin/sh not allowed (--allow-native)');
  });

  it('the scheduler skips a node that does not allow the job, and trusts a node that says nothing', () => {
    const job = { technology: 'native', image: '/bin/sh', devices: [] } as unknown as JobDefinition;
    const node = { allowed: { native: ['/bin/'], devices: [] } } as unknown as SchedulableNode;
    expect(checkHostAllowances(job, node)).toBeNull();
    expect(checkHostAllowances(job, { ...node, allowed: { native: [], devices: [] } })).toMatch(
      /--allow-native/,
    );
    expect(checkHostAllowances(job, {} as SchedulableNode)).toBeNull();
  });

  it('reads the flags, refuses relative or dotted paths, and drops root with setpriv', async () => {
    const config = buildConfig(
      parseOptions(
        optionSpecs,
        ['--name', 'w', '--allow-native', '/opt/edge/,/bin/true', '--allow-device', '/dev/snd/'],
        {},
      ),
    );
    expect(config.allowed).toEqual({ native: ['/opt/edge/', '/bin/true'], devices: ['/dev/snd/'] });
    expect(config.nativeUser).toBe('nobody');
    expect(() => buildConfig(parseOptions(optionSpecs, ['--allow-native', 'bin/sh'], {}))).toThrow(
      /--allow-native/,
    );
    expect(() => buildConfig(parseOptions(optionSpecs, ['--allow-device', '/dev/../etc'], {}))).toThrow(
      /--allow-device/,
    );
    expect(await resolveRunAs('nobody', false)).toBeUndefined(); // not root: workloads run as this process
    expect(await resolveRunAs('root', true)).toBeUndefined();
    const nobody = await resolveRunAs('nobody', true);
    expect(nobody).toMatchObject({ name: 'nobody', uid: 65534 });
    expect(asUser(nobody, ['/bin/sh', '-c', 'id'])).toEqual([
      nobody!.setpriv,
      '--reuid=65534',
      `--regid=${nobody!.gid}`,
      '--clear-groups',
      '--',
      '/bin/sh',
      '-c',
      'id',
    ]);
    await expect(resolveRunAs('no-such-user-here', true)).rejects.toThrow(/no user "no-such-user-here"/);
  });
});
