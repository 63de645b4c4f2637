import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

export type Db = Database.Database;

const MIGRATIONS: string[] = [
  `CREATE TABLE nodes (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     secret_hash TEXT NOT NULL,
     info TEXT NOT NULL,
     address TEXT,
     status TEXT NOT NULL,
     registered_at INTEGER NOT NULL,
     last_seen INTEGER,
     telemetry TEXT,
     subnet TEXT
   );
   CREATE TABLE jobs (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     spec TEXT NOT NULL,
     state TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     service_ip TEXT,
     last_generation INTEGER NOT NULL DEFAULT 0
   );
   CREATE UNIQUE INDEX jobs_live_name ON jobs(name) WHERE state = 'active';
   CREATE TABLE instances (
     job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     number INTEGER NOT NULL,
     node_id TEXT,
     status TEXT NOT NULL,
     detail TEXT NOT NULL DEFAULT '',
     container_id TEXT,
     generation INTEGER NOT NULL,
     restarts INTEGER NOT NULL DEFAULT 0,
     started_at INTEGER,
     exit_code INTEGER,
     updated_at INTEGER NOT NULL,
     instance_ip TEXT,
     namespace_ip TEXT,
     PRIMARY KEY (job_id, number)
   );
   CREATE INDEX instances_node ON instances(node_id);
   CREATE TABLE commands (
     id TEXT PRIMARY KEY,
     node_id TEXT NOT NULL,
     kind TEXT NOT NULL,
     job_id TEXT NOT NULL,
     instance INTEGER NOT NULL,
     generation INTEGER NOT NULL,
     payload TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     sent_at INTEGER,
     attempts INTEGER NOT NULL DEFAULT 0,
     acked_at INTEGER,
     ok INTEGER,
     error TEXT
   );
   CREATE INDEX commands_unacked ON commands(node_id) WHERE acked_at IS NULL;
   CREATE INDEX commands_job ON commands(job_id);
   CREATE TABLE moves (
     job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     number INTEGER NOT NULL,
     from_node TEXT NOT NULL,
     to_node TEXT NOT NULL,
     generation INTEGER NOT NULL,
     started_at INTEGER NOT NULL,
     PRIMARY KEY (job_id, number)
   );
   CREATE TABLE events (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     ts INTEGER NOT NULL,
     type TEXT NOT NULL,
     message TEXT NOT NULL,
     node_id TEXT,
     job_id TEXT
   );`,
  // The overlay: one /26 per worker, and instance and service IPs that never collide, also across tables; a
  // worker's overlay endpoint; which node asked about which job, and the table last pushed for each job.
  `CREATE UNIQUE INDEX nodes_subnet ON nodes(subnet) WHERE subnet IS NOT NULL;
   CREATE UNIQUE INDEX jobs_service_ip ON jobs(service_ip) WHERE service_ip IS NOT NULL;
   CREATE UNIQUE INDEX instances_instance_ip ON instances(instance_ip) WHERE instance_ip IS NOT NULL;
   CREATE TRIGGER instance_ip_not_a_service_ip_insert BEFORE INSERT ON instances
     WHEN NEW.instance_ip IS NOT NULL AND EXISTS (SELECT 1 FROM jobs WHERE service_ip = NEW.instance_ip)
     BEGIN SELECT RAISE(ABORT, 'UNIQUE: instance_ip is a service IP'); END;
   CREATE TRIGGER instance_ip_not_a_service_ip_update BEFORE UPDATE OF instance_ip ON instances
     WHEN NEW.instance_ip IS NOT NULL AND EXISTS (SELECT 1 FROM jobs WHERE service_ip = NEW.instance_ip)
     BEGIN SELECT RAISE(ABORT, 'UNIQUE: instance_ip is a service IP'); END;
   CREATE TRIGGER service_ip_not_an_instance_ip_insert BEFORE INSERT ON jobs
     WHEN NEW.service_ip IS NOT NULL AND EXISTS (SELECT 1 FROM instances WHERE instance_ip = NEW.service_ip)
     BEGIN SELECT RAISE(ABORT, 'UNIQUE: service_ip is an instance IP'); END;
   CREATE TRIGGER service_ip_not_an_instance_ip_update BEFORE UPDATE OF service_ip ON jobs
     WHEN NEW.service_ip IS NOT NULL AND EXISTS (SELECT 1 FROM instances WHERE instance_ip = NEW.service_ip)
     BEGIN SELECT RAISE(ABORT, 'UNIQUE: service_ip is an instance IP'); END;
   ALTER TABLE nodes ADD COLUMN public_ip TEXT;
   ALTER TABLE nodes ADD COLUMN udp_port INTEGER;
   CREATE TABLE net_interest (
     node_id TEXT NOT NULL,
     job_id TEXT NOT NULL,
     asked_at INTEGER NOT NULL,
     PRIMARY KEY (node_id, job_id)
   );
   CREATE INDEX net_interest_job ON net_interest(job_id);
   CREATE TABLE net_tables (
     job_id TEXT PRIMARY KEY,
     digest TEXT NOT NULL,
     pushed_at INTEGER NOT NULL
   );`,
  // Interest in a job that went away stays, marked, until the node's next announce: a net manager offline
  // when `removed` was pushed (a clean session) gets it then.
  'ALTER TABLE net_interest ADD COLUMN removed_at INTEGER;',
  // When each instance was placed again after failing (JSON list of ms timestamps within its policy's interval),
  // so a restart of the cluster manager does not hand out fresh attempts.
  "ALTER TABLE instances ADD COLUMN reschedules TEXT NOT NULL DEFAULT '[]';",
  // The secrets of nodes an operator removed: such a node never joins again with the identity it had.
  `CREATE TABLE removed_nodes (
     secret_hash TEXT PRIMARY KEY,
     node_id TEXT NOT NULL,
     name TEXT NOT NULL,
     removed_at INTEGER NOT NULL
   );`,
  // Named tokens with a role (admin, deployer, read-only, join), stored hashed; revoked ones stay, marked.
  `CREATE TABLE tokens (
     name TEXT PRIMARY KEY,
     role TEXT NOT NULL,
     secret_hash TEXT NOT NULL UNIQUE,
     created_at INTEGER NOT NULL,
     expires_at INTEGER,
     revoked_at INTEGER
   );`,
  // The overlay key its net manager announced (X25519, base64): route tables hand it to peers.
  'ALTER TABLE nodes ADD COLUMN overlay_key TEXT;',
  // Where else its net manager may be reached (JSON [{ip, port}]: local addresses, its NAT's mapping).
  'ALTER TABLE nodes ADD COLUMN overlay_candidates TEXT;',
  // An operator's say over a node: cordoned (no new instances), and labels set or removed at run time (JSON
  // {key: value, or null for removed}), over those the node announces.
  `ALTER TABLE nodes ADD COLUMN cordoned INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE nodes ADD COLUMN operator_labels TEXT NOT NULL DEFAULT '{}';`,
  // Job versions: every spec a job had (the newest kept), the version each instance runs, the latest roll-out
  // (JSON), and when an instance got its version and when it was last seen healthy. Jobs already there are
  // version 1, stable.
  `CREATE TABLE job_versions (
     job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     version INTEGER NOT NULL,
     spec TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     stable INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (job_id, version)
   );
   ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
   ALTER TABLE jobs ADD COLUMN rollout TEXT;
   ALTER TABLE instances ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
   ALTER TABLE instances ADD COLUMN version_since INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE instances ADD COLUMN health TEXT;
   ALTER TABLE instances ADD COLUMN healthy_since INTEGER;
   INSERT INTO job_versions (job_id, version, spec, created_at, stable)
     SELECT id, 1, spec, created_at, 1 FROM jobs;`,
  // Draining: an operator asked for everything on it to move away (it is cordoned too).
  'ALTER TABLE nodes ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;',
];

/**
 * The data dir holds node secrets' hashes, tokens and job specs (their `env` included): 0700, and the database
 * 0600 before SQLite opens it. SQLite gives its -wal and -shm files the database file's mode; ones left by an
 * older version are narrowed too.
 */
function keepPrivate(dataDir: string, file: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700);
  const path = join(dataDir, file);
  if (!existsSync(path)) writeFileSync(path, '', { mode: 0o600 });
  for (const suffix of ['', '-wal', '-shm'])
    if (existsSync(`${path}${suffix}`)) chmodSync(`${path}${suffix}`, 0o600);
}

/**
 * Opens the cluster manager's SQLite database in WAL mode with synchronous=NORMAL: a commit is written to the
 * WAL file (it survives a kill -9 of this process at once) but not fsynced on the event loop. What is told to
 * the outside (a 201, a registration, a command sent) waits for Store.durable(), which fsyncs the WAL once for
 * every commit made before it, off the event loop: a job acknowledged with 201 also survives a power cut.
 */
export function openDatabase(dataDir: string, file = 'cluster-manager.db'): Db {
  keepPrivate(dataDir, file);
  const db = new Database(join(dataDir, file));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  const version = db.pragma('user_version', { simple: true }) as number;
  for (let index = version; index < MIGRATIONS.length; index++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[index]!);
      db.pragma(`user_version = ${index + 1}`);
    })();
  }
  cacheStatements(db);
  return db;
}

/**
 * Every statement is compiled once: the stores call `prepare` with the same SQL on every message, and compiling
 * costs more than running most of them. Statements run to completion synchronously (none is iterated), so one
 * statement per SQL text can be shared. The schema is fixed once migrations ran, so a cached plan stays valid.
 */
function cacheStatements(db: Db): void {
  const compile = db.prepare.bind(db);
  const statements = new Map<string, Database.Statement>();
  db.prepare = ((sql: string) => {
    let statement = statements.get(sql);
    if (!statement) {
      statement = compile(sql);
      statements.set(sql, statement);
    }
    return statement;
  }) as Db['prepare'];
}
