import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  describeSensors,
  loadSensorsFile,
  parseSensorsFile,
  readSensors,
  SensorsFileError,
} from '../../node-engine/telemetry/sensors.js';

let dir: string;

describe('sensors file', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ne-sensors-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the format of CONTRACT.md, with file values multiplied by their scale', async () => {
    const temp = join(dir, 'temp');
    await writeFile(temp, '42500\n');
    const configs = parseSensorsFile(`
- id: cam0
  type: camera
  device: /dev/nonexistent-video0
- id: t1
  type: temperature
  file: ${temp}
  scale: 0.001
  unit: C
- id: null0
  type: sink
  device: /dev/null
`);
    expect(configs).toHaveLength(3);
    expect(configs[0]?.scale).toBe(1);
    const sensors = await describeSensors(configs);
    expect(sensors).toEqual([
      { id: 'cam0', type: 'camera', device: '/dev/nonexistent-video0', available: false },
      { id: 't1', type: 'temperature', unit: 'C', available: true },
      { id: 'null0', type: 'sink', device: '/dev/null', available: true },
    ]);
    const readings = await readSensors(configs, 1000);
    expect(readings[0]).toEqual({ id: 'cam0', type: 'camera', value: false, ts: 1000 });
    expect(readings[1]?.value).toBeCloseTo(42.5);
    expect(readings[1]?.unit).toBe('C');
    expect(readings[2]?.value).toBe(true);
  });

  it('names the bad field of a wrong file in one line', () => {
    expect(() => parseSensorsFile('- id: x\n  type: camera\n  device: video0\n')).toThrow(/\[0\]\.device/);
    expect(() => parseSensorsFile('- id: x\n  colour: red\n')).toThrow(SensorsFileError);
    expect(() => parseSensorsFile('- id: [\n')).toThrow(/not valid YAML/);
    expect(() => parseSensorsFile('- {id: a, type: t}\n- {id: a, type: t}\n')).toThrow(/used twice/);
  });

  it('says which file it cannot read', async () => {
    await expect(loadSensorsFile(join(dir, 'missing.yaml'))).rejects.toThrow(
      /cannot read sensors file .*ENOENT/,
    );
  });

  it('an empty file means no sensors', () => {
    expect(parseSensorsFile('')).toEqual([]);
  });
});
