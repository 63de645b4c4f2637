// Keeps one program of start-up.sh running: restarts it with backoff (1 s doubling to 30 s) when it exits
// unexpectedly; on SIGTERM, SIGINT or SIGHUP stops it (SIGTERM, then SIGKILL after a grace period) and exits.
//
//   node supervise.mjs --name NAME --pid-file FILE --child-pid-file FILE --log FILE [--grace-ms MS]
//                      [--log-max-bytes N] [--log-files N] [--log-check-ms MS] -- CMD [ARG...]
//
// The program writes straight into the log file (not through a pipe), so it keeps running and logging even if
// this supervisor is killed with SIGKILL; start-up.sh then still finds it by the child pid file.
//
// The log is rotated by copy and truncate, since the program keeps its own descriptor (opened for appending, so
// it writes on at the start of the emptied file): at start (the previous run's log becomes LOG.1, for a look
// after a crash) and whenever it has grown past --log-max-bytes (checked every --log-check-ms). LOG.1 to
// LOG.<log-files> are kept. A line written between the copy and the truncation is lost.
import { spawn } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  copyFileSync,
  existsSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { parseArgs } from 'node:util';

const MIN_DELAY_MS = 1_000;
const MAX_DELAY_MS = 30_000;
// A usage error (contract: exit 2 on a bad flag) comes back on every restart: restarting would only hide it.
const USAGE_ERROR_EXIT_CODE = 2;

const { values: opts, positionals: command } = parseArgs({
  allowPositionals: true,
  options: {
    name: { type: 'string' },
    'pid-file': { type: 'string' },
    'child-pid-file': { type: 'string' },
    log: { type: 'string' },
    'grace-ms': { type: 'string', default: '10000' },
    'log-max-bytes': { type: 'string', default: String(10 * 1024 * 1024) },
    'log-files': { type: 'string', default: '3' },
    'log-check-ms': { type: 'string', default: '5000' },
  },
});
const name = opts.name;
const pidFile = opts['pid-file'];
const childPidFile = opts['child-pid-file'];
const logFile = opts.log;
const graceMs = Number(opts['grace-ms']);
const logMaxBytes = Number(opts['log-max-bytes']);
const logFiles = Number(opts['log-files']);
const logCheckMs = Number(opts['log-check-ms']);
if (
  !name ||
  !pidFile ||
  !childPidFile ||
  !logFile ||
  command.length === 0 ||
  !(graceMs >= 0) ||
  !(logMaxBytes > 0) ||
  !Number.isInteger(logFiles) ||
  !(logFiles >= 1) ||
  !(logCheckMs > 0)
) {
  console.error(
    'usage: supervise.mjs --name NAME --pid-file FILE --child-pid-file FILE --log FILE [--grace-ms MS] ' +
      '[--log-max-bytes N] [--log-files N] [--log-check-ms MS] -- CMD [ARG...]',
  );
  process.exit(2);
}

let child = null;
let childStartedAt = 0;
let restartDelayMs = MIN_DELAY_MS;
let restartTimer = null;
let stopping = false;

/** One pino-style JSON line, so the log stays one format with the program's own lines. */
function log(level, msg, extra = {}) {
  const line = {
    level,
    time: Date.now(),
    name: 'supervisor',
    program: name,
    pid: process.pid,
    msg,
    ...extra,
  };
  appendFileSync(logFile, `${JSON.stringify(line)}\n`);
}

/** LOG.1 ... LOG.<n-1> move up one (the last one goes), the log is copied to LOG.1 and emptied. */
function rotateLog() {
  for (let n = logFiles - 1; n >= 1; n--) {
    if (existsSync(`${logFile}.${n}`)) renameSync(`${logFile}.${n}`, `${logFile}.${n + 1}`);
  }
  copyFileSync(logFile, `${logFile}.1`);
  truncateSync(logFile, 0);
}

function logSize() {
  try {
    return statSync(logFile).size;
  } catch {
    return 0;
  }
}

let rotationFailed = false;
function rotateLogPast(bytes) {
  if (logSize() <= bytes) return;
  try {
    rotateLog();
    rotationFailed = false;
  } catch (error) {
    // A full disk, say: the log grows on, and the next check tries again (said once, not at every check).
    if (!rotationFailed) log(40, `cannot rotate ${logFile}: ${error.message}`);
    rotationFailed = true;
  }
}

function writePidFile(file, pid) {
  // Write then rename: a reader never sees a half-written file.
  writeFileSync(`${file}.tmp`, `${pid}\n`);
  renameSync(`${file}.tmp`, file);
}

/** Removes a pid file only while it still names `pid` (a newer start may have replaced it). */
function removePidFile(file, pid) {
  try {
    if (readFileSync(file, 'utf8').trim() === String(pid)) rmSync(file, { force: true });
  } catch {
    // already gone
  }
}

function startChild() {
  restartTimer = null;
  const logFd = openSync(logFile, 'a');
  childStartedAt = Date.now();
  const started = spawn(command[0], command.slice(1), { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd); // the child holds its own copy
  child = started;
  let ended = false;
  const onEnd = (code, signal, error) => {
    if (ended) return;
    ended = true;
    onChildEnded(started.pid, code, signal, error);
  };
  started.once('exit', (code, signal) => onEnd(code, signal));
  started.once('error', (error) => onEnd(null, null, error));
  if (started.pid !== undefined) {
    writePidFile(childPidFile, started.pid);
    log(30, `started ${name}`, { childPid: started.pid });
  }
}

function onChildEnded(childPid, code, signal, error) {
  child = null;
  if (childPid !== undefined) removePidFile(childPidFile, childPid);
  if (stopping) {
    log(30, `${name} stopped`, { code, signal });
    finish(0);
    return;
  }
  if (code === USAGE_ERROR_EXIT_CODE) {
    log(50, `${name} exited with code 2 (a usage error that a restart will not fix); giving up`);
    finish(1);
    return;
  }
  // A program that ran a good while before exiting starts over with the shortest delay.
  if (Date.now() - childStartedAt >= MAX_DELAY_MS) restartDelayMs = MIN_DELAY_MS;
  const reason = error
    ? `failed to start: ${error.message}`
    : `exited unexpectedly (code ${code}, signal ${signal})`;
  log(40, `${name} ${reason}; restarting in ${restartDelayMs / 1000} s`, { code, signal });
  restartTimer = setTimeout(startChild, restartDelayMs);
  restartDelayMs = Math.min(restartDelayMs * 2, MAX_DELAY_MS);
}

function stop(signal) {
  if (stopping) return;
  stopping = true;
  if (restartTimer) clearTimeout(restartTimer);
  if (!child) {
    log(30, `received ${signal}; ${name} was not running`);
    finish(0);
    return;
  }
  log(30, `received ${signal}; stopping ${name}`, { childPid: child.pid });
  child.kill('SIGTERM');
  const running = child;
  setTimeout(() => {
    if (child !== running) return;
    log(40, `${name} did not stop within ${graceMs} ms; sending SIGKILL`, { childPid: running.pid });
    running.kill('SIGKILL');
  }, graceMs);
}

function finish(exitCode) {
  removePidFile(pidFile, process.pid);
  process.exit(exitCode);
}

for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => stop(signal));
rotateLogPast(0);
setInterval(() => rotateLogPast(logMaxBytes), logCheckMs).unref();
writePidFile(pidFile, process.pid);
startChild();
