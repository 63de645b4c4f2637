import { describe, expect, it } from 'vitest';
import { buildConfig, ConfigError, optionSpecs, parseLabels } from '../../node-engine/config.js';
import { mapArch } from '../../node-engine/node-info.js';
import { parseOptions } from '../../shared/index.js';

describe('node engine config', () => {
  it('reads labels k=v,k2=v2 and refuses anything else', () => {
    expect(parseLabels('zone=a, gpu=yes')).toEqual({ zone: 'a', gpu: 'yes' });
    expect(parseLabels(undefined)).toEqual({});
    expect(() => parseLabels('zone')).toThrow(ConfigError);
    expect(() => parseLabels('=a')).toThrow(/--labels/);
  });

  it('builds the config with the defaults of CONTRACT.md, flags over env', () => {
    const options = parseOptions(optionSpecs, ['--name', 'w1', '--port', '0'], {
      NE_LABELS: 'zone=b',
      NE_RUNTIMES: 'docker',
    });
    const config = buildConfig(options);
    expect(config).toMatchObject({
      clusterManagerUrl: 'https://127.0.0.1:10100',
      name: 'w1',
      port: 0,
      labels: { zone: 'b' },
      runtimes: ['docker'],
      dockerSocket: '/var/run/docker.sock',
      telemetryIntervalMs: undefined,
      logLimits: { maxSizeMB: 10, maxFiles: 3 },
      imageGc: { highPercent: 85, lowPercent: 80 },
    });
    expect(config.dataDir).toMatch(/\/var\/node-engine$/);
    expect(() => buildConfig(parseOptions(optionSpecs, ['--runtimes', 'docker,wasm'], {}))).toThrow(/wasm/);
    expect(() => buildConfig(parseOptions(optionSpecs, ['--name', 'bad name'], {}))).toThrow(/--name/);
    const limits =
      (...flags: string[]) =>
      () =>
        buildConfig(parseOptions(optionSpecs, flags, {}));
    expect(limits('--log-max-files', '0')).toThrow(/--log-max-files/);
    expect(limits('--log-max-size-mb', '0')).toThrow(/--log-max-size-mb/);
    expect(limits('--image-gc-low-percent', '90')).toThrow(/--image-gc-low-percent/);
    expect(limits('--image-gc-high-percent', '101')).toThrow(/at most 100/);
    expect(
      buildConfig(parseOptions(optionSpecs, ['--log-max-files', '5'], { NE_IMAGE_GC_HIGH_PERCENT: '95' })),
    ).toMatchObject({
      logLimits: { maxFiles: 5 },
      imageGc: { highPercent: 95, lowPercent: 80 },
    });
  });

  it('maps Node architectures to the start-up names', () => {
    expect(mapArch('x64')).toBe('amd64');
    expect(mapArch('arm64')).toBe('arm64');
    expect(mapArch('arm')).toBe('arm-7');
    expect(mapArch('ia32')).toBeUndefined();
  });
});
