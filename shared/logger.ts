import { pino } from 'pino';

export type Logger = pino.Logger;

/** JSON lines on stdout; `LOG_LEVEL` picks the level (info by default). */
export function createLogger(component: string): Logger {
  return pino({ name: component, level: process.env.LOG_LEVEL ?? 'info', base: { pid: process.pid } });
}
