import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import type Dockerode from 'dockerode';
import {
  type Logger,
  type NodeInfo,
  refusedByAllowances,
  type SensorConfig,
  type Technology,
  VERSION,
} from '../shared/index.js';
import { startLocalApi } from './api.js';
import type { NodeEngineConfig } from './config.js';
import { CommandHandler } from './control/command-handler.js';
import { InstanceStatusBook, toReport } from './instance-status.js';
import { LogStreams } from './logs/log-streams.js';
import { MqttLink } from './mqtt-link.js';
import { NetManagerLink } from './net-manager-link.js';
import { collectNodeInfo } from './node-info.js';
import { OverlayAttachments } from './overlay-attachments.js';
import { Reconciler } from './reconciler.js';
import { NodeRegistration, type Registered } from './registration.js';
import { RuntimeHealth } from './runtime-health.js';
import { DockerRuntime } from './runtimes/docker.js';
import { createDockerClient } from './runtimes/docker-client.js';
import { ImageGc } from './runtimes/image-gc.js';
import { NativeRuntime } from './runtimes/native.js';
import { type RunAs, resolveRunAs } from './runtimes/native-user.js';
import type { Runtime } from './runtimes/runtime.js';
import { DesiredStateStore } from './state/desired-state.js';
import { RestartLedger } from './state/restart-ledger.js';
import { GpuMonitor } from './telemetry/gpus.js';
import { describeSensors } from './telemetry/sensors.js';
import { TelemetryPublisher } from './telemetry/telemetry-publisher.js';

/** How often the node engine looks whether its net manager is there and is the one it handed over to. */
const NET_MANAGER_WATCH_MS = 3000;

/** The parts that exist once the node knows its id. */
interface ActiveNode {
  nodeId: string;
  runtimes: Runtime[];
  reconciler: Reconciler;
  commands: CommandHandler;
  logs: LogStreams;
}

/**
 * Wires the node engine together: registration gives the node id and MQTT settings; commands change the
 * local desired state; the reconciler makes the runtimes match it; telemetry and status go out on MQTT.
 * With a stored identity the node runs its workloads before (and without) the cluster manager.
 */
export class NodeEngine {
  readonly statuses = new InstanceStatusBook();
  private docker: Dockerode | undefined;
  private readonly netManager: NetManagerLink;
  private readonly registration: NodeRegistration;
  /** Probes the configured runtimes all the time: what is announced and what is reconciled follows it. */
  private health: RuntimeHealth | undefined;
  /** Removes unused images when Docker's disk fills up. */
  private imageGc: ImageGc | undefined;
  private nodeInfo: NodeInfo | undefined;
  private gpus: GpuMonitor | undefined;
  private active: ActiveNode | undefined;
  private mqtt: MqttLink | undefined;
  private telemetry: TelemetryPublisher | undefined;
  private api: Server | undefined;
  private activation: Promise<void> = Promise.resolve();
  private statusesUnsubscribe: (() => void) | undefined;
  private telemetryNodeId: string | undefined;
  private readonly overlay: OverlayAttachments;
  /** Whether a net manager answered lately: the node then registers with `overlay: true` to get a subnet. */
  private netManagerPresent = false;
  private lastRegistered: Registered | undefined;
  private netManagerWatch: NodeJS.Timeout | undefined;
  /** Hand-overs to the net manager run one at a time, each with the latest registration. */
  private handOvers: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Who native workloads run as; undefined: as this process. */
  private nativeRunAs: RunAs | undefined;

  constructor(
    private readonly config: NodeEngineConfig,
    private readonly sensors: SensorConfig[],
    private readonly logger: Logger,
  ) {
    this.netManager = new NetManagerLink(config.netManagerSocket, logger);
    this.overlay = new OverlayAttachments(this.netManager, logger);
    this.registration = new NodeRegistration({
      clusterManagerUrl: config.clusterManagerUrl,
      dataDir: config.dataDir,
      joinToken: config.joinToken,
      caFile: config.caFile,
      nodeInfo: () => ({ ...(this.nodeInfo as NodeInfo), overlay: this.netManagerPresent }),
      onRegistered: (registered) => this.onRegistered(registered),
      logger,
    });
  }

  /** Starts everything; resolves with the local API's URL. */
  async start(): Promise<string> {
    await mkdir(this.config.dataDir, { recursive: true, mode: 0o700 });
    this.netManagerPresent = (await this.netManager.status()) !== undefined;
    if (!this.netManagerPresent) {
      this.logger.warn(
        { socket: this.config.netManagerSocket },
        'no net manager: running with the overlay off',
      );
    }
    this.nativeRunAs = await resolveRunAs(this.config.nativeUser);
    this.docker = await createDockerClient(this.config.dockerSocket);
    this.health = new RuntimeHealth({
      runtimes: this.config.runtimes.map((technology) => this.createRuntime(technology, 'probe')),
      logger: this.logger,
      dataDir: this.config.dataDir,
      onChange: () => this.runtimesChanged(),
    });
    await this.health.start();
    this.logger.info({ runtimes: this.health.available() }, 'runtimes');
    if (this.config.runtimes.includes('docker')) {
      this.imageGc = new ImageGc({ docker: this.docker, logger: this.logger, ...this.config.imageGc });
      this.imageGc.start();
    }
    this.gpus = await GpuMonitor.create(this.logger);
    this.nodeInfo = await collectNodeInfo({
      name: this.config.name,
      gpus: this.gpus.inventory,
      sensors: await describeSensors(this.sensors),
      runtimes: this.health.available(),
      labels: this.config.labels,
      overlay: false,
      allowed: this.config.allowed,
    });
    const api = await startLocalApi(
      {
        info: () => this.info(),
        instances: () => this.statuses.all(),
        metrics: () => ({
          instances: this.statuses.all(),
          mqttConnected: this.mqtt?.connected ?? false,
          unsentStatuses: this.mqtt?.unsentStatuses ?? 0,
          logStreams: {
            open: this.active?.logs.open ?? 0,
            waitingForCredit: this.active?.logs.waitingForCredit ?? 0,
            bytesRead: this.active?.logs.bytesRead ?? 0,
          },
          runtimes: this.config.runtimes.map((technology) => ({
            technology,
            up: this.health?.isUp(technology) ?? false,
          })),
        }),
      },
      this.config.port,
    );
    this.api = api.server;
    const identity = await this.registration.loadIdentity();
    if (identity?.nodeId) await this.activate(identity.nodeId);
    this.registration.start();
    this.scheduleNetManagerWatch();
    return api.url;
  }

  /** Stops cleanly; workloads keep running and are adopted when the node engine starts again. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.registration.stop();
    await this.health?.stop();
    this.imageGc?.stop();
    clearTimeout(this.netManagerWatch);
    this.telemetry?.stop();
    await this.activation;
    await this.handOvers;
    this.active?.logs.closeAll();
    await this.active?.reconciler.stop();
    await this.mqtt?.close(true);
    await new Promise<void>((resolve) => (this.api ? this.api.close(() => resolve()) : resolve()));
  }

  /**
   * A runtime came up or went away: the cluster manager is told what this node can run now (a node engine started
   * before dockerd takes Docker jobs once it answers), and the reconciler looks at once.
   */
  private runtimesChanged(): void {
    if (this.nodeInfo) {
      this.nodeInfo = { ...this.nodeInfo, runtimes: this.health?.available() ?? [] };
      this.registration.registerAgain();
    }
    this.active?.reconciler.trigger();
  }

  private createRuntime(technology: Technology, nodeId: string): Runtime {
    const logLimits = this.config.logLimits;
    if (technology === 'docker')
      return new DockerRuntime({ docker: this.docker!, nodeId, logger: this.logger, logLimits });
    return new NativeRuntime({
      nodeId,
      dataDir: this.config.dataDir,
      runAs: this.nativeRunAs,
      logger: this.logger,
      logLimits,
    });
  }

  private info() {
    return {
      nodeId: this.active?.nodeId ?? null,
      name: this.config.name,
      registration: this.registration.state,
      mqttConnected: this.mqtt?.connected ?? false,
      runtimes: this.health?.available() ?? [],
      overlay: this.netManager.overlay,
      version: VERSION,
      clusterManager: this.config.clusterManagerUrl,
    };
  }

  /** Serialized: a registration during start-up's activation waits for it. */
  private activate(nodeId: string): Promise<void> {
    const next = this.activation.then(() => this.activateNow(nodeId));
    this.activation = next.catch(() => undefined);
    return next;
  }

  private async activateNow(nodeId: string): Promise<void> {
    if (this.active?.nodeId === nodeId) return;
    if (this.active) await this.retire(this.active);
    const store = await DesiredStateStore.load(this.config.dataDir, nodeId);
    if (store.corruptFileSetAside)
      this.logger.error(
        { setAside: store.corruptFileSetAside },
        'desired state file unreadable: set aside; taking back what runs here, and what the cluster manager sends again',
      );
    const ledger = await RestartLedger.load(this.config.dataDir);
    // Every configured runtime, up or not: one that comes up later is reconciled as soon as it answers.
    const runtimes = this.config.runtimes.map((technology) => this.createRuntime(technology, nodeId));
    const reconciler = new Reconciler({
      nodeId,
      store,
      runtimes,
      ledger,
      statuses: this.statuses,
      logger: this.logger,
      overlay: this.overlay,
      runtimeHealth: this.health,
    });
    const commands = new CommandHandler({
      store,
      // The node is the authority on its host: whatever a cluster manager sends, what it does not allow is refused.
      refusal: (job) => refusedByAllowances(job, this.config.allowed),
      ack: (ack) => this.mqtt?.publishAck(ack),
      onChange: () => reconciler.trigger(),
      logger: this.logger,
    });
    const logs = new LogStreams({
      runtimes,
      publish: (message) => this.mqtt?.publishLogStream(message) ?? false,
      logger: this.logger,
    });
    this.active = { nodeId, runtimes, reconciler, commands, logs };
    reconciler.start();
    this.logger.info({ nodeId, desired: store.all().length }, 'node active: reconciling its desired state');
  }

  /**
   * The cluster manager forgot the old id and gave a new one: the old id's workloads belong to a node that no
   * longer exists (the cluster manager places them anew), so they go.
   */
  private async retire(old: ActiveNode): Promise<void> {
    this.logger.warn({ nodeId: old.nodeId }, 'node id changed: removing the workloads of the old id');
    old.logs.closeAll();
    await old.reconciler.stop();
    for (const runtime of old.runtimes) {
      for (const workload of await runtime.list().catch(() => [])) {
        await runtime.remove(workload.handle).catch(() => undefined);
        if (workload.handle.technology === 'docker') await this.overlay.detach(workload.handle.id);
      }
    }
    for (const state of this.statuses.all()) this.statuses.forget(state.job, state.instance);
  }

  private async onRegistered(registered: Registered): Promise<void> {
    await this.activate(registered.nodeId);
    const active = this.active;
    if (!active) return;
    const same =
      this.mqtt?.nodeId === registered.nodeId &&
      this.mqtt.settings.url === registered.mqtt.url &&
      this.mqtt.settings.username === registered.mqtt.username &&
      this.mqtt.settings.password === registered.mqtt.password;
    if (!same) {
      await this.mqtt?.close(false);
      this.statusesUnsubscribe?.();
      const link = new MqttLink({
        nodeId: registered.nodeId,
        settings: registered.mqtt,
        logger: this.logger,
        onCommand: (payload) => void active.commands.handle(payload),
        onLogControl: (payload) => active.logs.handle(payload),
        // The cluster manager may have missed reports while the link was down: say where everything stands.
        // A link that dropped and came back may mean a cluster manager that restarted with other settings (a
        // telemetry interval, the overlay's encryption): registering again, on a short-lived connection, asks.
        onConnect: (again) => {
          for (const state of this.statuses.all()) link.publishStatus(toReport(state));
          if (again) this.registration.registerAgain();
        },
        onCannotConnect: (why) => {
          this.logger.warn({ why }, 'the MQTT link cannot get through: registering again');
          this.registration.registerAgain();
        },
      });
      this.mqtt = link;
      this.statusesUnsubscribe = this.statuses.onChange((report) => link.publishStatus(report));
    }
    this.startTelemetry(registered, active);
    this.lastRegistered = registered;
    await this.handOverToNetManager();
  }

  /**
   * Tells the net manager who this node is, one hand-over at a time. A net manager that started anew (another
   * boot id) has lost its links: the reconciler attaches every container again.
   */
  private handOverToNetManager(): Promise<void> {
    const next = this.handOvers.then(async () => {
      const registered = this.lastRegistered;
      if (!registered) return;
      await this.netManager.handOver({
        nodeId: registered.nodeId,
        // Its own login where the broker has one for it (an external broker with per-node logins).
        mqtt: registered.netMqtt ?? registered.mqtt,
        ...(registered.subnet !== undefined ? { subnet: registered.subnet } : {}),
        ...(registered.overlayEncryption !== undefined ? { encryption: registered.overlayEncryption } : {}),
        ...(registered.rendezvous ? { rendezvous: registered.rendezvous } : {}),
      });
      this.active?.reconciler.trigger();
    });
    this.handOvers = next.catch(() => undefined);
    return next;
  }

  /** Checks every few seconds, one check at a time (a status call may take up to 10 s). */
  private scheduleNetManagerWatch(): void {
    this.netManagerWatch = setTimeout(() => {
      void this.watchNetManager().finally(() => {
        if (!this.stopped) this.scheduleNetManagerWatch();
      });
    }, NET_MANAGER_WATCH_MS);
  }

  /** A net manager that appears, restarts or goes away is noticed within a few seconds. */
  private async watchNetManager(): Promise<void> {
    const status = await this.netManager.status();
    this.netManagerPresent = status !== undefined;
    const registered = this.lastRegistered;
    if (!status || !registered || this.stopped) return;
    if (!registered.overlay) {
      // Registered while no net manager answered, so without a subnet: register again to get one.
      if (this.registration.state !== 'registered') return;
      this.logger.info('a net manager answers: registering again for an overlay subnet');
      this.registration.registerAgain();
    } else if (registered.subnet !== undefined && status.bootId !== this.netManager.bootId) {
      await this.handOverToNetManager();
    }
  }

  private startTelemetry(registered: Registered, active: ActiveNode): void {
    const intervalMs = this.config.telemetryIntervalMs ?? registered.telemetryIntervalMs;
    if (this.telemetry && this.telemetryNodeId === active.nodeId) {
      this.telemetry.setInterval(intervalMs);
      return;
    }
    this.telemetry?.stop();
    this.telemetryNodeId = active.nodeId;
    this.telemetry = new TelemetryPublisher({
      nodeId: active.nodeId,
      dataDir: this.config.dataDir,
      gpus: this.gpus as GpuMonitor,
      sensors: this.sensors,
      statuses: this.statuses,
      runtimes: active.runtimes,
      intervalMs,
      publishTelemetry: (telemetry) => this.mqtt?.publishTelemetry(telemetry),
      publishResources: (resources) => this.mqtt?.publishResources(resources),
      logger: this.logger,
    });
    this.telemetry.start();
  }
}
