import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

/** Debian's mosquitto on a loopback port of its own, anonymous allowed: the external-broker path. */
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

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  private static spawn(config: string): ChildProcess {
    const binary = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((path) => existsSync(path));
    return spawn(binary ?? 'mosquitto', ['-c', config], { stdio: 'ignore' });
  }

  private ready(): Promise<void> {
    return waitFor(
      () =>
        new Promise<boolean>((resolve) => {
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

  async stop(): Promise<void> {
    const exited = new Promise((resolve) => this.process.once('exit', resolve));
    this.process.kill('SIGTERM');
    await exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
