import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { containersWithLabel, removeContainersWithLabel } from '../helpers/docker.js';
import { runEdgectlHere } from '../helpers/edgectl.js';
import { freePort } from '../helpers/ports.js';
import { baseEnv, machineArch, PROJECT_DIR, runScript } from '../helpers/start-up.js';
import { waitFor } from '../helpers/wait.js';

const UNITS = ['edge-cluster-manager.service', 'edge-net-manager.service', 'edge-node-engine.service'];
/** The PATH systemd gives a system service. */
const SYSTEMD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * systemctl for a machine where systemd is not PID 1 (this one): it records each call and answers as a
 * running systemd of FAKE_SYSTEMD_VERSION (252, Debian 12's) would, but starts nothing (the test runs the units'
 * command lines itself) and reports every unit inactive.
 */
const FAKE_SYSTEMCTL = `#!/bin/sh
echo "$*" >>"$FAKE_SYSTEMCTL_LOG"
case "$1" in
  is-system-running) echo "\${FAKE_SYSTEMD_STATE:-running}"; [ "\${FAKE_SYSTEMD_STATE:-running}" = running ] ;;
  is-active) [ "$2" = --quiet ] || echo inactive; exit 3 ;;
  --version) echo "systemd \${FAKE_SYSTEMD_VERSION:-252} (fake)" ;;
esac
exit 0
`;

/** A unit file's settings: each key with its values in order (Environment= and After= come more than once). */
function readUnit(path: string): Map<string, string[]> {
  const unit = new Map<string, string[]>();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match) unit.set(match[1]!, [...(unit.get(match[1]!) ?? []), match[2]!]);
  }
  return unit;
}

/** A settings file as install writes it: NAME='value' lines. */
function readSettings(path: string): Record<string, string> {
  const settings: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const match = /^([A-Z_][A-Z0-9_]*)='(.*)'$/.exec(line);
    if (match) settings[match[1]!] = match[2]!;
  }
  return settings;
}

/** systemd-analyze verify on unit files: its exit code and everything it printed. */
function verify(...units: string[]): { status: number | null; output: string } {
  const result = spawnSync('systemd-analyze', ['verify', ...units], { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

function ip(namespace: string, ...args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', namespace, ...args], { encoding: 'utf8' });
}

/**
 * `./start-up.sh install` and `uninstall` (issue 14, item 7): units written into a folder of the test's, checked
 * with systemd-analyze and then run as systemd would run them; uninstall in a network namespace of its own.
 */
describe('start-up.sh install and uninstall', () => {
  const dir = mkdtempSync(join(tmpdir(), 'start-up-install-'));
  const unitDir = join(dir, 'units');
  const configDir = join(dir, 'etc');
  const dataRoot = join(dir, 'data');
  const binDir = join(dir, 'bin');
  const calls = join(dir, 'systemctl-calls');
  const edgectlConfig = join(dir, 'edgectl.json');
  const namespace = `edge-uninst-${process.pid}`;
  const nodeName = `install-e2e-${process.pid}`;
  const env: NodeJS.ProcessEnv = {
    ...baseEnv(dir),
    PATH: `${join(dir, 'fake')}:${process.env.PATH}`,
    FAKE_SYSTEMCTL_LOG: calls,
    START_UP_UNIT_DIR: unitDir,
    START_UP_CONFIG_DIR: configDir,
    START_UP_DATA_DIR: dataRoot,
    START_UP_STATE_DIR: join(dir, 'state'),
    START_UP_BIN_DIR: binDir,
    EDGECTL_CONFIG: edgectlConfig,
    NODE_NAME: nodeName,
    CM_RENDEZVOUS_PORT: '0',
  };
  const running: ChildProcess[] = [];
  let nodeId = '';
  mkdirSync(join(dir, 'fake'));
  writeFileSync(join(dir, 'fake', 'systemctl'), FAKE_SYSTEMCTL, { mode: 0o755 });

  /** systemctl's calls since the last look. */
  function systemctlCalls(): string[] {
    if (!existsSync(calls)) return [];
    const lines = readFileSync(calls, 'utf8').trim().split('\n');
    rmSync(calls);
    return lines.filter((line) => line !== 'is-system-running' && line !== '--version');
  }

  /** Starts a unit's ExecStart as systemd does: its working dir, a clean environment, its settings file. */
  function runUnit(name: string): ChildProcess {
    const unit = readUnit(join(unitDir, name));
    const unitEnv: NodeJS.ProcessEnv = { PATH: SYSTEMD_PATH };
    for (const pair of unit.get('Environment') ?? [])
      unitEnv[pair.slice(0, pair.indexOf('='))] = pair.slice(pair.indexOf('=') + 1);
    Object.assign(unitEnv, readSettings(unit.get('EnvironmentFile')![0]!));
    const [program, ...args] = unit.get('ExecStart')![0]!.split(' ') as [string, ...string[]];
    const log = openSync(join(dir, `${name}.log`), 'a');
    const child = spawn(program, args, {
      cwd: unit.get('WorkingDirectory')![0],
      env: unitEnv,
      stdio: ['ignore', log, log],
    });
    running.push(child);
    return child;
  }

  async function stopUnits(): Promise<void> {
    for (const child of running.splice(0).reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  }

  afterAll(async () => {
    await stopUnits();
    if (nodeId) removeContainersWithLabel(`edge.node=${nodeId}`);
    spawnSync('ip', ['netns', 'del', namespace]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses to install where systemd does not run, and writes nothing', () => {
    const refused = runScript(['install', '-y'], { ...env, FAKE_SYSTEMD_STATE: 'offline' });
    expect(refused.status, refused.output_).toBe(1);
    expect(refused.stderr).toContain('systemd does not run this machine');
    expect(refused.stderr).toContain(`./start-up.sh ${machineArch()} runs the programs`);
    expect(existsSync(unitDir)).toBe(false);
    expect(existsSync(configDir)).toBe(false);
  });

  it('installs an all-in-one cluster: a unit per program that systemd-analyze verifies, started', {
    timeout: 600_000,
  }, async () => {
    Object.assign(env, {
      CM_HTTP_PORT: String(await freePort()),
      CM_MQTT_PORT: String(await freePort()),
      NE_PORT: String(await freePort()),
    });
    const installed = runScript(['install', '-y'], env, 540_000);
    expect(installed.status, installed.output_).toBe(0);
    expect(installed.stdout).toContain(`installed and started ${UNITS.join(' ')}`);
    expect(installed.stdout).toContain('the all-in-one cluster is installed as systemd services');
    expect(installed.stdout).toContain(`${join(binDir, 'edgectl')} (`);
    expect(installed.stdout).toContain(`context "local" in ${edgectlConfig}`);
    // Started in order with one restart (an upgrade restarts what ran), enabled for the next boot.
    expect(systemctlCalls()).toEqual([
      'daemon-reload',
      `enable --quiet ${UNITS.join(' ')}`,
      `restart ${UNITS.join(' ')}`,
      'is-active --quiet edge-cluster-manager.service',
    ]);
    // The fake systemd starts nothing: install says so instead of waiting.
    expect(installed.stderr).toContain('edge-cluster-manager.service is not active');

    expect(readdirSync(unitDir).sort()).toEqual(UNITS);
    const unitFiles = UNITS.map((unit) => join(unitDir, unit));
    expect(verify(...unitFiles)).toEqual({ status: 0, output: '' });
    // The check fails where it must: a program that is not there, a setting systemd does not know.
    const broken = join(dir, 'broken', 'edge-node-engine.service');
    mkdirSync(join(dir, 'broken'));
    const engineUnit = readFileSync(unitFiles[2]!, 'utf8');
    writeFileSync(broken, engineUnit.replace(/^ExecStart=\S+/m, 'ExecStart=/nowhere/node'));
    expect(verify(broken).status).not.toBe(0);
    writeFileSync(broken, engineUnit.replace('Restart=always', 'Restart=always\nRestartEvery=5'));
    expect(verify(broken).output).toContain("Unknown key 'RestartEvery'");

    const [cm, nm, ne] = unitFiles.map(readUnit) as [
      Map<string, string[]>,
      Map<string, string[]>,
      Map<string, string[]>,
    ];
    for (const unit of [cm, nm, ne]) {
      // For ever, whatever the exit, but for a usage error; at boot; from the project's build.
      expect(unit.get('Restart')).toEqual(['always']);
      expect(unit.get('RestartSec')).toEqual(['5']);
      expect(unit.get('StartLimitIntervalSec')).toEqual(['0']);
      expect(unit.get('RestartPreventExitStatus')).toEqual(['2']);
      expect(unit.get('WantedBy')).toEqual(['multi-user.target']);
      expect(unit.get('WorkingDirectory')).toEqual([PROJECT_DIR.replace(/\/$/, '')]);
    }
    // Docker only where it is used, and wanted, not required: the node engine runs without it (native jobs).
    expect(ne.get('After')![0]).toBe(
      'network-online.target docker.service edge-cluster-manager.service edge-net-manager.service',
    );
    expect(ne.get('Wants')![0]).toBe('network-online.target docker.service edge-net-manager.service');
    expect(ne.has('Requires')).toBe(false);
    expect(`${cm.get('After')} ${cm.get('Wants')} ${nm.get('After')}`).not.toContain('docker');
    expect(ne.get('KillMode')).toEqual(['process']);
    // The node engine as start-up.sh's supervisor runs it: node-engine/node-options, the one place for it.
    const node = execFileSync('sh', ['-c', 'command -v node'], { encoding: 'utf8' }).trim();
    const options = readFileSync(join(PROJECT_DIR, 'node-engine', 'node-options'), 'utf8').split('\n');
    const flags = options.filter((line) => line.startsWith('--'));
    expect(ne.get('ExecStart')).toEqual([
      `${node} ${flags.join(' ')} ${join(PROJECT_DIR, 'dist', 'node-engine', 'main.js')}`,
    ]);
    expect(ne.get('Environment')).toEqual(options.filter((line) => /^[A-Z_]+=/.test(line)));
    expect(cm.get('ExecStart')).toEqual([
      `${node} ${join(PROJECT_DIR, 'dist', 'cluster-manager', 'main.js')}`,
    ]);

    // Settings for root only; the join secret the cluster manager and its node engine share, never in a unit.
    expect(statSync(configDir).mode & 0o777).toBe(0o700);
    for (const program of ['cluster-manager', 'net-manager', 'node-engine'])
      expect(statSync(join(configDir, `${program}.env`)).mode & 0o777).toBe(0o600);
    const cmSettings = readSettings(join(configDir, 'cluster-manager.env'));
    const neSettings = readSettings(join(configDir, 'node-engine.env'));
    expect(cmSettings).toMatchObject({
      CM_DATA_DIR: join(dataRoot, 'cluster-manager'),
      CM_HTTP_PORT: env.CM_HTTP_PORT,
      CM_RENDEZVOUS_PORT: '0',
    });
    expect(neSettings).toMatchObject({
      CLUSTER_MANAGER_URL: `https://127.0.0.1:${env.CM_HTTP_PORT}`,
      JOIN_TOKEN: cmSettings.CM_JOIN_TOKEN,
      NE_CA_FILE: join(dataRoot, 'cluster-manager', 'tls', 'ca.pem'),
      NE_DATA_DIR: join(dataRoot, 'node-engine'),
      NE_NET_MANAGER_SOCKET: join(dataRoot, 'net-manager', 'net-manager.sock'),
      NE_PORT: env.NE_PORT,
      NODE_NAME: nodeName,
    });
    expect(readSettings(join(configDir, 'net-manager.env'))).toEqual({
      NM_DATA_DIR: join(dataRoot, 'net-manager'),
    });
    for (const unit of unitFiles) expect(readFileSync(unit, 'utf8')).not.toContain(cmSettings.CM_JOIN_TOKEN!);

    // edgectl on PATH (here: the test's bin dir), runnable through its link, with the context `local`.
    const link = join(binDir, 'edgectl');
    expect(readlinkSync(link)).toBe(join(PROJECT_DIR, 'dist', 'cluster-manager', 'cli', 'edgectl.js'));
    expect(execFileSync(link, ['--version'], { encoding: 'utf8' })).toMatch(/^\d+\.\d+\.\d+\n$/);
    expect(JSON.parse(readFileSync(edgectlConfig, 'utf8'))).toEqual({
      currentContext: 'local',
      contexts: {
        local: {
          server: `https://127.0.0.1:${env.CM_HTTP_PORT}`,
          caFile: join(dataRoot, 'cluster-manager', 'tls', 'ca.pem'),
          tokenFile: join(dataRoot, 'cluster-manager', 'api-token'),
        },
      },
    });
  });

  it('backs off between restarts where systemd can (254 and later)', { timeout: 120_000 }, () => {
    const joinSecret = readSettings(join(configDir, 'cluster-manager.env')).CM_JOIN_TOKEN;
    const installed = runScript(['install', '-y'], { ...env, FAKE_SYSTEMD_VERSION: '255' }, 100_000);
    expect(installed.status, installed.output_).toBe(0);
    const unit = readUnit(join(unitDir, 'edge-node-engine.service'));
    expect([unit.get('RestartSec'), unit.get('RestartSteps'), unit.get('RestartMaxDelaySec')]).toEqual([
      ['1'],
      ['5'],
      ['30'],
    ]);
    systemctlCalls();
    expect(runScript(['install', '-y'], env, 100_000).status).toBe(0);
    expect(readUnit(join(unitDir, 'edge-node-engine.service')).get('RestartSec')).toEqual(['5']);
    systemctlCalls();
    // Installed again, the cluster keeps its join secret (join tokens handed out before stay good).
    expect(readSettings(join(configDir, 'cluster-manager.env')).CM_JOIN_TOKEN).toBe(joinSecret);
    expect(readSettings(join(configDir, 'node-engine.env')).JOIN_TOKEN).toBe(joinSecret);
  });

  it("runs as a cluster from the units' command lines, which edgectl reaches by its context alone", {
    timeout: 180_000,
  }, async () => {
    // As systemd starts them at boot, without the net manager (it would take this machine's overlay devices).
    runUnit('edge-cluster-manager.service');
    runUnit('edge-node-engine.service');
    const contextOnly = { EDGECTL_CONFIG: edgectlConfig };
    await waitFor(
      async () => {
        const nodes = await runEdgectlHere(['nodes', '-o', 'json'], { env: contextOnly });
        return (
          nodes.code === 0 && nodes.stdout.includes(`"status": "online"`) && nodes.stdout.includes(nodeName)
        );
      },
      'the node online, through edgectl',
      90_000,
      500,
    );
    const job = join(dir, 'job.yaml');
    writeFileSync(
      job,
      `name: install-e2e-${process.pid}\nimage: edge/busybox:latest\ncommand: [sleep, "3600"]\n`,
    );
    const deployed = await runEdgectlHere(['deploy', '-f', job, '--wait', '--timeout', '2m'], {
      env: contextOnly,
    });
    expect(deployed.code, deployed.stderr).toBe(0);
    nodeId = JSON.parse(readFileSync(join(dataRoot, 'node-engine', 'identity.json'), 'utf8')).nodeId;
    expect(containersWithLabel(`edge.node=${nodeId}`).length).toBe(1);
    // systemctl stop: the node engine goes, its container stays (as at every stop of the node engine).
    await stopUnits();
    expect(containersWithLabel(`edge.node=${nodeId}`).length).toBe(1);
  });

  it('refuses ./start-up.sh <arch> where it is installed, and shows the services in status', () => {
    const refused = runScript([machineArch(), '-y'], env);
    expect(refused.status, refused.output_).toBe(1);
    expect(refused.stderr).toContain('installed as systemd services here');
    const status = runScript(['status'], env);
    // The fake systemd runs nothing: systemd's word for that, and exit 3 (LSB: not running).
    expect(status.status, status.output_).toBe(3);
    expect(status.stdout).toContain(
      'node-engine: inactive (systemd unit edge-node-engine.service; journalctl -u edge-node-engine.service)',
    );
    systemctlCalls();
  });

  it("installs again as a worker: the cluster manager's and net manager's units go, the other settings stay", {
    timeout: 120_000,
  }, () => {
    // Another program's edgectl in the bin dir is never replaced.
    const otherBin = join(dir, 'other-bin');
    mkdirSync(otherBin);
    writeFileSync(join(otherBin, 'edgectl'), '#!/bin/sh\necho theirs\n', { mode: 0o755 });
    const worker = { ...env, START_UP_BIN_DIR: otherBin, NE_PORT: undefined, NODE_NAME: undefined };
    const url = 'https://127.0.0.1:1';
    const installed = runScript(
      ['install', '-y', '--no-net-manager'],
      { ...worker, CLUSTER_MANAGER_URL: url, JOIN_TOKEN: 'a-join-token' },
      100_000,
    );
    expect(installed.status, installed.output_).toBe(0);
    expect(installed.stdout).toContain(
      `this worker is installed as systemd services (edge-node-engine) and joins ${url}`,
    );
    expect(systemctlCalls()).toEqual([
      'disable --now --quiet edge-cluster-manager.service',
      'disable --now --quiet edge-net-manager.service',
      'daemon-reload',
      'enable --quiet edge-node-engine.service',
      'restart edge-node-engine.service',
    ]);
    expect(readdirSync(unitDir)).toEqual(['edge-node-engine.service']);
    expect(readdirSync(configDir)).toEqual(['node-engine.env']);
    expect(verify(join(unitDir, 'edge-node-engine.service'))).toEqual({ status: 0, output: '' });
    const ne = readUnit(join(unitDir, 'edge-node-engine.service'));
    expect(ne.get('After')).toEqual(['network-online.target docker.service']);
    // What was set before and not now stays (its name, its port); the join pair is the new one.
    const workerSettings = readSettings(join(configDir, 'node-engine.env'));
    expect(workerSettings).toMatchObject({
      CLUSTER_MANAGER_URL: url,
      JOIN_TOKEN: 'a-join-token',
      NODE_NAME: nodeName,
      NE_PORT: env.NE_PORT,
      NE_DATA_DIR: join(dataRoot, 'node-engine'),
    });
    // Not the CA of the cluster it left: the worker verifies its new cluster manager by the join token's pin.
    expect(workerSettings.NE_CA_FILE).toBeUndefined();
    expect(installed.stderr).toContain(`${join(otherBin, 'edgectl')} is not this project's`);
    expect(readFileSync(join(otherBin, 'edgectl'), 'utf8')).toBe('#!/bin/sh\necho theirs\n');

    // Installed again without the join pair, a worker stays a worker of the same cluster.
    const again = runScript(['install', '-y', '--no-net-manager'], worker, 100_000);
    expect(again.status, again.output_).toBe(0);
    expect(again.stdout).toContain(`installed as a worker of ${url} before: it stays one`);
    expect(readdirSync(unitDir)).toEqual(['edge-node-engine.service']);
    expect(readSettings(join(configDir, 'node-engine.env')).JOIN_TOKEN).toBe('a-join-token');
    systemctlCalls();
  });

  it("uninstalls: units, settings, the net manager's links and chain, edgectl's link; the data when asked", {
    timeout: 120_000,
  }, () => {
    execFileSync('ip', ['netns', 'add', namespace]);
    const inside = (command: string) =>
      execFileSync('ip', ['netns', 'exec', namespace, 'sh', '-ec', command]);
    // What a killed net manager leaves, and what is not the project's (another bridge, another chain).
    inside(
      'ip tuntap add dev edge0 mode tun; ip link set edge0 up; ip route add 10.16.0.0/12 dev edge0; ' +
        'ip link add edgebr0 type bridge; ip link add ve-0123456789ab type veth peer name ce-peer; ' +
        'ip link add other0 type bridge; ' +
        'iptables -w -N EDGE-OVERLAY; iptables -w -A EDGE-OVERLAY -i edge0 -j ACCEPT; ' +
        'iptables -w -I FORWARD 1 -j EDGE-OVERLAY; iptables -w -I FORWARD 1 -j EDGE-OVERLAY; ' +
        'iptables -w -N OTHER; iptables -w -A FORWARD -j OTHER',
    );
    const prefix = ['ip', 'netns', 'exec', namespace];
    const links = () =>
      ip(namespace, 'ip', '-o', 'link', 'show')
        .split('\n')
        .map((line) => /^\d+: ([^:@]+)/.exec(line)?.[1])
        .filter((name) => name !== undefined);
    const rules = () => ip(namespace, 'iptables', '-w', '-S');

    // No terminal and no -y: everything but the data and the node's containers, and it says so.
    const kept = runScript(['uninstall'], env, 100_000, prefix);
    expect(kept.status, kept.output_).toBe(0);
    expect(systemctlCalls()).toEqual(['disable --now --quiet edge-node-engine.service', 'daemon-reload']);
    expect(readdirSync(unitDir)).toEqual([]);
    expect(existsSync(configDir)).toBe(false);
    expect(existsSync(join(binDir, 'edgectl'))).toBe(false);
    expect(kept.stdout).toContain(
      'removed what the net manager made: veth ve-0123456789ab, bridge edgebr0, TUN edge0, iptables chain EDGE-OVERLAY',
    );
    expect(links().sort()).toEqual(['lo', 'other0']);
    expect(rules()).not.toContain('EDGE-OVERLAY');
    expect(rules()).toContain('-A FORWARD -j OTHER');
    expect(kept.stdout).toContain('kept the data');
    expect(kept.stdout).toContain("this node's containers keep running");
    expect(existsSync(join(dataRoot, 'cluster-manager', 'api-token'))).toBe(true);
    expect(containersWithLabel(`edge.node=${nodeId}`).length).toBe(1);

    // With -y: the data and this node's containers too; nothing else of the machine's.
    const removed = runScript(['uninstall', '-y'], env, 100_000, prefix);
    expect(removed.status, removed.output_).toBe(0);
    expect(removed.stdout).toContain("removed this node's 1 containers");
    expect(containersWithLabel(`edge.node=${nodeId}`)).toEqual([]);
    expect(existsSync(dataRoot)).toBe(false);
    expect(links().sort()).toEqual(['lo', 'other0']);

    // Once more, and where another program's edgectl is: nothing to do, nothing touched, exit 0.
    const otherBin = join(dir, 'other-bin');
    const again = runScript(['uninstall', '-y'], { ...env, START_UP_BIN_DIR: otherBin }, 100_000, prefix);
    expect(again.status, again.output_).toBe(0);
    expect(again.stdout).toContain(`no systemd unit of this project in ${unitDir}`);
    expect(again.stdout).toContain('no overlay links or iptables chain of this project');
    expect(again.stdout).toContain(`no data of an install here (${dataRoot})`);
    expect(again.stdout).toContain(`left ${join(otherBin, 'edgectl')} alone`);
    expect(existsSync(join(otherBin, 'edgectl'))).toBe(true);
    expect(systemctlCalls()).toEqual([]);
  });
});
