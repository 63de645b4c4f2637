import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from '../shared/index.js';
import type { Store } from './store/index.js';

/** Acked commands are history after a day; the outbox keeps what still matters. */
const KEEP_ACKED_COMMANDS_MS = 24 * 3600_000;

/** Hourly clean-up of the state that only grows: acked commands and old events. */
export function scheduleGarbageCollection(store: Store, logger: Logger): ScheduledTask {
  return cron.schedule('17 * * * *', () => {
    const commands = store.commands.pruneAcked(Date.now() - KEEP_ACKED_COMMANDS_MS);
    const events = store.events.prune();
    if (commands + events > 0) logger.info({ commands, events }, 'garbage collected');
  });
}
