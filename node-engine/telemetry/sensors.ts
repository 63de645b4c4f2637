import { access, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import {
  describeProblems,
  type Sensor,
  type SensorConfig,
  type SensorReading,
  SensorsFileSchema,
} from '../../shared/index.js';

/** A sensors file that cannot be read or does not match the format of CONTRACT.md. */
export class SensorsFileError extends Error {
  override name = 'SensorsFileError';
}

/** The YAML parser, loaded only on a node that has a sensors file (most have none: it costs memory). */
function parseYaml(text: string): unknown {
  const yaml = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return yaml.parse(text);
}

export function parseSensorsFile(text: string, source = 'sensors file'): SensorConfig[] {
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (error) {
    throw new SensorsFileError(`${source}: not valid YAML: ${(error as Error).message.split('\n')[0]}`);
  }
  const parsed = SensorsFileSchema.safeParse(data ?? []);
  if (!parsed.success) throw new SensorsFileError(`${source}: ${describeProblems(parsed.error)}`);
  const ids = new Set<string>();
  for (const sensor of parsed.data) {
    if (ids.has(sensor.id)) throw new SensorsFileError(`${source}: sensor id "${sensor.id}" used twice`);
    ids.add(sensor.id);
  }
  return parsed.data;
}

export async function loadSensorsFile(path: string): Promise<SensorConfig[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new SensorsFileError(
      `cannot read sensors file ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
  return parseSensorsFile(text, path);
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** A sensor is available when its device node exists and its file (if any) can be read. */
export async function describeSensors(configs: SensorConfig[]): Promise<Sensor[]> {
  return Promise.all(
    configs.map(async (config) => {
      const available =
        (config.device === undefined || (await exists(config.device))) &&
        (config.file === undefined || (await exists(config.file)));
      return {
        id: config.id,
        type: config.type,
        ...(config.device !== undefined ? { device: config.device } : {}),
        ...(config.unit !== undefined ? { unit: config.unit } : {}),
        available,
      };
    }),
  );
}

/** One reading per sensor: a file's number times its scale, a device's presence, null when unreadable. */
export async function readSensors(configs: SensorConfig[], now = Date.now()): Promise<SensorReading[]> {
  return Promise.all(
    configs.map(async (config): Promise<SensorReading> => {
      let value: SensorReading['value'] = null;
      if (config.file !== undefined) {
        try {
          const text = (await readFile(config.file, 'utf8')).trim();
          const number = Number.parseFloat(text);
          value = Number.isFinite(number) ? number * config.scale : text.slice(0, 256);
        } catch {
          value = null;
        }
      } else if (config.device !== undefined) {
        value = await exists(config.device);
      }
      return {
        id: config.id,
        type: config.type,
        value,
        ...(config.unit !== undefined ? { unit: config.unit } : {}),
        ts: now,
      };
    }),
  );
}
