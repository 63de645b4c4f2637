import { type FileHandle, open } from 'node:fs/promises';
import type { JobDefinition } from '../../shared/index.js';
import { CommandStore } from './command-store.js';
import { type Db, openDatabase } from './database.js';
import { EventLog } from './event-log.js';
import { type JobRecord, JobStore, jobDefinition, MoveStore } from './job-store.js';
import { JobVersionStore } from './job-version-store.js';
import { NetInterestStore } from './net-interest-store.js';
import { NodeStore } from './node-store.js';
import { TokenStore } from './token-store.js';
import { UndoLog } from './undo-log.js';

export * from './change-feed.js';
export * from './command-store.js';
export * from './database.js';
export * from './event-log.js';
export * from './job-store.js';
export * from './job-version-store.js';
export * from './net-interest-store.js';
export * from './node-store.js';
export * from './token-store.js';
export * from './undo-log.js';

/** The public side of a class: what its callers may use, as a type another implementation can meet. */
type PublicOf<T> = { [K in keyof T]: T[K] };

/**
 * The cluster manager's state as every component sees it: small stores that answer from memory, written
 * through to a durable log, with transactions that land whole (memory included) and a promise that what was
 * written is durable. `SqliteStore` is the implementation; a server database (Postgres, etcd) would be another,
 * met by implementing these types. Components take this type, never the SQLite one.
 */
export interface Store {
  readonly nodes: PublicOf<NodeStore>;
  readonly jobs: PublicOf<JobStore>;
  readonly versions: PublicOf<JobVersionStore>;
  readonly commands: PublicOf<CommandStore>;
  readonly events: PublicOf<EventLog>;
  readonly moves: PublicOf<MoveStore>;
  readonly netInterest: PublicOf<NetInterestStore>;
  readonly tokens: PublicOf<TokenStore>;
  /** Runs fn in one transaction: all of it lands or none, in the durable log and in memory alike. */
  transaction<T>(fn: () => T): T;
  /** Resolves once every write made before the call is durable. */
  durable(): Promise<void>;
  close(): void;
}

/**
 * The definition that instances of `version` run: the job's own spec for its current version, else the spec that
 * version had (the current one if it was pruned, which no instance running it allows).
 */
export function definitionAt(store: Store, job: JobRecord, version: number): JobDefinition {
  if (version === job.version) return jobDefinition(job);
  return { id: job.id, ...(store.versions.specAt(job.id, version) ?? job.spec) };
}

/** The cluster manager's state in one SQLite database (WAL), held in memory by small stores. */
export class SqliteStore implements Store {
  readonly nodes: NodeStore;
  readonly jobs: JobStore;
  readonly versions: JobVersionStore;
  readonly commands: CommandStore;
  readonly events: EventLog;
  readonly moves: MoveStore;
  readonly netInterest: NetInterestStore;
  readonly tokens: TokenStore;

  private readonly undo = new UndoLog();

  constructor(readonly db: Db) {
    this.nodes = new NodeStore(db, this.undo);
    this.jobs = new JobStore(db, this.undo);
    this.versions = new JobVersionStore(db);
    this.jobs.removed.subscribe((jobId) => this.versions.forgetJob(jobId));
    this.commands = new CommandStore(db);
    this.events = new EventLog(db);
    this.moves = new MoveStore(db, this.undo);
    this.jobs.removed.subscribe((jobId) => this.moves.forgetJob(jobId));
    this.netInterest = new NetInterestStore(db);
    this.tokens = new TokenStore(db, this.undo);
  }

  static open(dataDir: string): SqliteStore {
    return new SqliteStore(openDatabase(dataDir));
  }

  /**
   * Resolves once every commit made before the call is on disk: one fsync of the WAL (in libuv's thread pool,
   * never on the event loop) serves every caller that asked while the previous one ran. SQLite writes its WAL
   * with write(2) at commit (synchronous=NORMAL); fsync of any descriptor of the file flushes those pages.
   */
  durable(): Promise<void> {
    this.syncWanted ??= (this.syncing ?? Promise.resolve()).then(() => {
      this.syncWanted = undefined;
      this.syncing = this.syncWal().finally(() => {
        this.syncing = undefined;
      });
      return this.syncing;
    });
    return this.syncWanted;
  }

  private syncing: Promise<void> | undefined;
  private syncWanted: Promise<void> | undefined;

  private async syncWal(): Promise<void> {
    const wal = `${this.db.name}-wal`;
    let handle: FileHandle | undefined;
    try {
      handle = await open(wal, 'r');
      await handle.sync();
    } catch (error) {
      // No WAL yet (nothing written since a checkpoint removed it): nothing to make durable.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    } finally {
      await handle?.close();
    }
  }

  /** Runs fn in one transaction: all of it lands or none, in SQLite and in the stores' memory alike. */
  transaction<T>(fn: () => T): T {
    return this.undo.within(() => this.db.transaction(fn)());
  }

  close(): void {
    this.db.close();
  }
}
