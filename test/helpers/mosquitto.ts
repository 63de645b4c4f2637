import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

/** The dynamic security admin login of a broker started with `dynsec`. */
export const DYNSEC_ADMIN = { username: 'edge-admin', password: 'edge-admin-password' };
const DYNSEC_PLUGIN = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib']
  .map((dir) => join(dir, 'mosquitto_dynamic_security.so'))
  .find((path) => existsSync(path));

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

  /**
   * `dynsec`: with mosquitto's dynamic security plugin instead of anonymous access, its admin login being
   * DYNSEC_ADMIN (made with `mosquitto_ctrl dynsec init`, as an operator sets it up).
   */
  static async start(options: { port?: number; dynsec?: boolean } = {}): Promise<Mosquitto> {
    const dir = mkdtempSync(join(tmpdir(), 'edge-mosquitto-'));
    const chosen = options.port ?? (await freePort());
    const config = join(dir, 'mosquitto.conf');
    const lines = [`listener ${chosen} 127.0.0.1`, 'persistence false'];
    if (options.dynsec) {
      const file = join(dir, 'dynamic-security.json');
      execFileSync('mosquitto_ctrl', ['dynsec', 'init', file, DYNSEC_ADMIN.username, DYNSEC_ADMIN.password], {
        stdio: 'ignore',
      });
      // Started as root, mosquitto drops to its own user before the plugin reads (and rewrites) its file in
      // this private temporary dir: this test broker stays root.
      lines.push(
        'user root',
        'allow_anonymous false',
        `plugin ${DYNSEC_PLUGIN}`,
        `plugin_opt_config_file ${file}`,
      );
    } else lines.push('allow_anonymous true');
    writeFileSync(config, `${lines.join('\n')}\n`);
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
