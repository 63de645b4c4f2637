import { type ChildProcess, execFileSync, execSync, spawn } from 'node:child_process';
import { mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './wait.js';

/**
 * A dockerd of the test's own (its socket, data root and exec root, in a network namespace of its own, without
 * iptables rules), so that a test can stop and start it as a power cut or an upgrade would without touching the
 * machine's dockerd other tests use. Its own namespace matters: a second dockerd in the machine's namespace
 * deletes the `docker0` bridge of the first when it stops. Only the process it started is ever signalled.
 */
export class PrivateDockerd {
  readonly dir = mkdtempSync(join(tmpdir(), 'edge-dockerd-'));
  readonly socket = join(this.dir, 'docker.sock');
  readonly netns = `edge-dockerd-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  private child: ChildProcess | undefined;
  private netnsMade = false;

  /** Copies an image from the machine's dockerd (scripts/test-env.sh made the test images): no registry needed. */
  load(image: string): void {
    execSync(`docker save ${image} | docker -H unix://${this.socket} load`, { stdio: 'ignore' });
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.running) return;
    if (!this.netnsMade) {
      execFileSync('ip', ['netns', 'add', this.netns]);
      this.netnsMade = true;
    }
    const log = openSync(join(this.dir, 'dockerd.log'), 'a');
    // nsenter enters the network namespace only (`ip netns exec` would remount /sys and hide the cgroups) and
    // execs dockerd in place: the child's pid is dockerd's.
    this.child = spawn(
      'nsenter',
      [
        ...[`--net=/run/netns/${this.netns}`, 'dockerd', '-H', `unix://${this.socket}`],
        ...['--data-root', join(this.dir, 'data'), '--exec-root', join(this.dir, 'exec')],
        ...['--pidfile', join(this.dir, 'docker.pid'), '--iptables=false', '--ip6tables=false'],
      ],
      { stdio: ['ignore', log, log] },
    );
    await waitFor(() => this.answers(), 'the private dockerd to answer', 30_000);
  }

  /** SIGTERM, as systemd stops it: dockerd stops its containers (10 s grace) and exits. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }

  docker(args: string[]): string {
    return execFileSync('docker', ['-H', `unix://${this.socket}`, ...args], { encoding: 'utf8' });
  }

  /** Removes its containers, stops it, and deletes its directories. */
  async destroy(): Promise<void> {
    if (this.running) {
      const ids = this.docker(['ps', '-aq']).split('\n').filter(Boolean);
      if (ids.length > 0) this.docker(['rm', '-f', ...ids]);
      await this.stop();
    }
    if (this.netnsMade) execFileSync('ip', ['netns', 'delete', this.netns]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private answers(): boolean {
    try {
      execFileSync('docker', ['-H', `unix://${this.socket}`, 'version', '--format', '{{.Server.Version}}'], {
        stdio: 'ignore',
      });
      return true;
    } catch {
      return false;
    }
  }
}
