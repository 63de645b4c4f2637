import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

/**
 * Debian's mosquitto on a loopback port of its own, anonymous allowed: the external-broker path. `halt()` and
 * `startAgain()` restart it on the same port, as an operator restarting the broker (nothing persisted).
 */
export class Mosquitto {
  private constructor(
    readonly port: number,
    private process: ChildProcess,
    private readonly dir: string,
  ) {}

  static async start(port?: number): Promise<Mosquitto> {
    const dir = mkdtempSync(join(tmpdir(), 'edge-mosquitto-'));
    const chosen = port ?? (await freePort());
    const config = join(dir, 'mosquitto.conf');
    writeFileSync(config, `listener ${chosen} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
    const broker = new Mosquitto(chosen, Mosquitto.spawn(config), dir);
    await broker.ready();
    return broker;
  }

  /** The broker's pid: tests pause it (SIGSTOP) to stand for a broker that falls behind. */
  get pid(): number {
    return this.process.pid!;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  private static spawn(config: string): ChildProcess {
    const binary = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((path) => existsSync(path));
    return spawn(binary ?? 'mosquitto', ['-c', config], { stdio: 'ignore' });
  }

  private get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  private ready(): Promise<void> {
    return waitFor(
      () =>
        new Promise<boolean>((resolve, reject) => {
          if (!this.running) {
            reject(new Error(`mosquitto exited with ${this.process.exitCode}`));
            return;
          }
          const socket = connect(this.port, '127.0.0.1', () => {
            socket.end();
            resolve(true);
          });
          socket.on('error', () => resolve(false));
        }),
      `mosquitto on port ${this.port}`,
      10_000,
    ).then(() => undefined);
  }

  /** Stops the broker process (SIGTERM); its clients lose their connections and sessions. */
  async halt(): Promise<void> {
    if (!this.running) return;
    const exited = new Promise((resolve) => this.process.once('exit', resolve));
    this.process.kill('SIGTERM');
    await exited;
  }

  /** Starts the broker again on the same port after `halt()`. */
  async startAgain(): Promise<void> {
    if (this.running) throw new Error('mosquitto is still running');
    this.process = Mosquitto.spawn(join(this.dir, 'mosquitto.conf'));
    await this.ready();
  }

  async stop(): Promise<void> {
    await this.halt();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
