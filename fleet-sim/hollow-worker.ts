import { io } from 'socket.io-client';
import { backoffDelay } from '../shared/backoff.js';
import { CommandSchema } from '../shared/command.js';
import { connectMqtt, type MqttClient } from '../shared/mqtt-client.js';
import type { MqttLogin } from '../shared/mqtt-login.js';
import {
  type NodeInfo,
  type NodeRegistrationAuth,
  newNodeSecret,
  RegisterAckSchema,
} from '../shared/node.js';
import { topics } from '../shared/topics.js';
import { describeProblems, parseJson } from '../shared/validation.js';
import type { FleetConfig } from './config.js';
import type { ErrorBook, FleetCounters, LatencyWindow } from './fleet-stats.js';
import type { HollowInstance } from './hollow-instances.js';
import { HollowInstances } from './hollow-instances.js';
import type { Identity, IdentityBook } from './identity-book.js';
import type { TimerWheel } from './timer-wheel.js';

/** The node engine's registration back-off and timeouts. */
const REGISTER_RETRY_BASE_MS = 500;
const REGISTER_RETRY_MAX_MS = 30_000;
const REGISTER_TIMEOUT_MS = 10_000;
/** CONNACK codes of MQTT 3.1.1 that say the login is not (or no longer) valid. */
const LOGIN_REFUSED = new Set([4, 5]);
/** A plausible disk, the same on every hollow worker. */
const DISK_BYTES = 64 * 1024 ** 3;
const DISK_USED_BYTES = Math.round(0.4 * DISK_BYTES);

/** What a worker uses of its fleet: shared settings, the one timer wheel, the pacing and the counters. */
export interface FleetLink {
  readonly config: FleetConfig;
  readonly wheel: TimerWheel;
  readonly counters: FleetCounters;
  readonly errors: ErrorBook;
  /** Where each worker's node id and secret are kept (across runs, with --identities). */
  readonly identities: IdentityBook;
  /** From a command's `issuedAt` to its arrival here. */
  readonly commandLatency: LatencyWindow;
  /** From a command's `issuedAt` to the `running` report of its instance. */
  readonly runningLatency: LatencyWindow;
  /** Queues this worker's registration behind the connect rate; the fleet calls `register()` on its turn. */
  requestRegistration(worker: HollowWorker): void;
  /** A registration attempt ended (either way): its place among those in flight is free. */
  registrationEnded(): void;
  /** The one callback of every publish, so no closure is made per message. */
  readonly onPublished: (error?: Error) => void;
}

export type WorkerState = 'waiting' | 'registering' | 'registered' | 'stopped';

/** Precomputed topic names and JSON fragments of one node id. */
interface Wire {
  information: string;
  jobResources: string;
  jobStatus: string;
  control: string;
  controlAck: string;
  status: string;
  /** `{"nodeId":"…","ts":` */
  telemetryHead: string;
}

function wireOf(nodeId: string): Wire {
  return {
    information: topics.information(nodeId),
    jobResources: topics.jobResources(nodeId),
    jobStatus: topics.jobStatus(nodeId),
    control: topics.control(nodeId),
    controlAck: topics.controlAck(nodeId),
    status: topics.status(nodeId),
    telemetryHead: `{"nodeId":${JSON.stringify(nodeId)},"ts":`,
  };
}

/**
 * One hollow worker: the node engine's protocol without Docker. It registers on `/init` (paced by its fleet),
 * closes that socket, logs in to MQTT as itself with the node engine's session options, publishes telemetry
 * when the fleet's wheel says so, and acks commands and reports their instances as running, in memory only.
 */
export class HollowWorker {
  state: WorkerState = 'waiting';
  readonly instances = new HollowInstances();
  private identity: Identity | undefined;
  private useIdentity = true;
  private registerAttempt = 0;
  private mqtt: MqttClient | undefined;
  /** The login the MQTT session was opened with (node id, url, user, password). */
  private mqttLogin: string | undefined;
  private wire: Wire | undefined;
  private everConnected = false;

  constructor(
    private readonly info: NodeInfo,
    private readonly fleet: FleetLink,
  ) {
    this.identity = fleet.identities.get(info.name);
  }

  get name(): string {
    return this.info.name;
  }

  get connected(): boolean {
    return this.mqtt?.connected === true;
  }

  start(): void {
    this.fleet.wheel.every((now) => this.publishTelemetry(now));
    this.fleet.requestRegistration(this);
  }

  /** One registration attempt; the fleet calls it when the connect rate allows. */
  register(): void {
    if (this.state === 'stopped') {
      this.fleet.registrationEnded();
      return;
    }
    this.state = 'registering';
    const socket = io(`${this.fleet.config.clusterManagerUrl}/init`, {
      transports: ['websocket'],
      reconnection: false,
      // One connection per worker, as each node engine has its own; never multiplexed with another worker's.
      forceNew: true,
      timeout: REGISTER_TIMEOUT_MS,
      ca: this.fleet.config.clusterCa,
      auth: this.auth(),
    });
    let ended = false;
    const end = (failure?: { kind: string; message: string }) => {
      if (ended) return;
      ended = true;
      socket.removeAllListeners();
      socket.disconnect();
      this.fleet.registrationEnded();
      if (failure) this.registrationFailed(failure.kind, failure.message);
    };
    socket.on('connect', () => {
      socket.timeout(REGISTER_TIMEOUT_MS).emit('register', this.info, (error: Error | null, ack: unknown) => {
        if (error) end({ kind: 'register-timeout', message: 'no answer to register' });
        else end(this.registered(ack));
      });
    });
    socket.on('connect_error', (error) => end(this.connectFailed(error)));
    socket.on('disconnect', (reason) => end({ kind: 'register-disconnected', message: reason }));
  }

  /** Says `offline` (a clean stop sends no last will) and closes the MQTT session. */
  async stop(): Promise<void> {
    this.state = 'stopped';
    const client = this.mqtt;
    const wire = this.wire;
    if (!client) return;
    if (client.connected && wire) {
      await new Promise<void>((resolve) => {
        client.publish(wire.status, 'offline', { qos: 1, retain: true }, () => resolve());
        setTimeout(resolve, 1000).unref();
      });
    }
    await client.endAsync(true).catch(() => undefined);
  }

  private auth(): NodeRegistrationAuth {
    if (this.useIdentity && this.identity) return { ...this.identity };
    // As a node engine does: its own secret, so that a join whose answer was lost can be made again.
    this.ownSecret ??= this.identity?.nodeSecret ?? newNodeSecret();
    return { token: this.fleet.config.joinToken, nodeSecret: this.ownSecret };
  }

  private ownSecret: string | undefined;

  private connectFailed(error: Error): { kind: string; message: string } {
    if (error.message === 'unauthorized' && this.useIdentity && this.identity) {
      // The cluster manager forgot this node: join again with the token (a new id).
      this.useIdentity = false;
      this.registerAttempt = 0;
      return { kind: 'register-identity-refused', message: error.message };
    }
    if (error.message === 'unauthorized') this.useIdentity = true;
    return { kind: 'register-connect', message: error.message };
  }

  /** Undefined when registered; else what went wrong. */
  private registered(raw: unknown): { kind: string; message: string } | undefined {
    const parsed = RegisterAckSchema.safeParse(raw);
    if (!parsed.success) return { kind: 'register-bad-ack', message: describeProblems(parsed.error) };
    const ack = parsed.data;
    if ('error' in ack) return { kind: `register-${ack.error.code}`, message: ack.error.message };
    if (this.state === 'stopped') return undefined;
    if (this.identity && this.identity.nodeId !== ack.nodeId) this.instances.clear();
    this.identity = { nodeId: ack.nodeId, nodeSecret: ack.nodeSecret };
    this.fleet.identities.set(this.name, this.identity);
    this.useIdentity = true;
    this.registerAttempt = 0;
    this.state = 'registered';
    this.fleet.counters.registrations++;
    this.openMqtt(ack.nodeId, ack.mqtt);
    return undefined;
  }

  private registrationFailed(kind: string, message: string): void {
    this.fleet.errors.note(kind, message);
    this.retryRegistration();
  }

  private retryRegistration(): void {
    if (this.state === 'stopped') return;
    this.state = 'waiting';
    const delay = backoffDelay(this.registerAttempt++, REGISTER_RETRY_BASE_MS, REGISTER_RETRY_MAX_MS);
    this.fleet.wheel.at(Date.now() + delay, () => this.fleet.requestRegistration(this));
  }

  /**
   * The node engine's MQTT session: its client id, a persistent session, `offline` as the retained will. As the
   * node engine does, a registration that hands out the same login keeps the session it has, and one that
   * changes it closes the old session cleanly (DISCONNECT: no last will) before it opens the new one.
   */
  private openMqtt(nodeId: string, login: MqttLogin): void {
    const key = JSON.stringify([nodeId, login.url, login.username, login.password]);
    if (this.mqtt && this.mqttLogin === key) return;
    this.mqttLogin = key;
    const previous = this.mqtt;
    this.mqtt = undefined;
    previous?.end(false);
    const wire = wireOf(nodeId);
    this.wire = wire;
    const client = connectMqtt(login.url, {
      username: login.username || undefined,
      password: login.password || undefined,
      ca: login.ca,
      clientId: `node-${nodeId}`,
      clean: false,
      will: { topic: wire.status, payload: Buffer.from('offline'), retain: true, qos: 1 },
    });
    this.mqtt = client;
    client.on('connect', () => {
      if (this.mqtt !== client) return;
      const { counters, onPublished } = this.fleet;
      counters.mqttConnects++;
      if (this.everConnected) counters.mqttReconnects++;
      this.everConnected = true;
      client.publish(wire.status, 'online', { qos: 1, retain: true }, onPublished);
      client.subscribe(wire.control, { qos: 1 }, (error) => {
        if (error) this.fleet.errors.note('mqtt-subscribe', error.message);
      });
      // As the node engine does: the cluster manager may have missed reports while the link was down.
      const now = Date.now();
      for (const instance of this.instances.live()) this.publishStatus(instance, now);
    });
    client.on('error', (error) => {
      if (this.mqtt !== client) return;
      const code = (error as Error & { code?: unknown }).code;
      if (typeof code === 'number' && LOGIN_REFUSED.has(code)) {
        this.fleet.errors.note('mqtt-login-refused', error.message);
        this.registerAgain(client);
      } else this.fleet.errors.note('mqtt', error.message);
    });
    client.on('message', (topic, payload) => {
      if (this.mqtt === client && topic === wire.control) this.onCommand(payload);
    });
  }

  /** The broker refused the login: the cluster manager no longer knows this secret. Register again. */
  private registerAgain(client: MqttClient): void {
    this.mqtt = undefined;
    this.mqttLogin = undefined;
    client.end(true);
    this.fleet.counters.reregistrations++;
    this.retryRegistration();
  }

  private publishTelemetry(now: number): void {
    const client = this.mqtt;
    const wire = this.wire;
    if (!client?.connected || !wire) return;
    const { counters, onPublished, config } = this.fleet;
    const info = this.info;
    const running = this.instances.running;
    const cpuPercent = Math.min(100, 3 + running * 2 + Math.random() * 4);
    const usedBytes = Math.min(info.memoryBytes, 0.2 * info.memoryBytes + running * 8 * 1024 * 1024);
    const memoryPercent = (usedBytes / info.memoryBytes) * 100;
    const payload =
      `${wire.telemetryHead}${now},"cpu":{"percent":${cpuPercent.toFixed(1)},"cores":${info.cpus},` +
      `"load1":${((cpuPercent / 100) * info.cpus).toFixed(2)}},"memory":{"totalBytes":${info.memoryBytes},` +
      `"usedBytes":${Math.round(usedBytes)},"percent":${memoryPercent.toFixed(1)}},"disk":{"totalBytes":` +
      `${DISK_BYTES},"usedBytes":${DISK_USED_BYTES},"percent":40},"gpus":[],"sensors":[],"instances":` +
      `${this.instances.summariesJson()}}`;
    client.publish(wire.information, payload, { qos: 0 }, onPublished);
    counters.telemetrySent++;
    if (!config.jobResources) return;
    client.publish(
      wire.jobResources,
      `{"ts":${now},"instances":${this.instances.resourcesJson()}}`,
      { qos: 0 },
      onPublished,
    );
    counters.jobResourcesSent++;
  }

  private onCommand(payload: Buffer): void {
    const { counters, errors, commandLatency, config, wheel } = this.fleet;
    const receivedAt = Date.now();
    counters.commandsReceived++;
    const json = parseJson(payload);
    const parsed = CommandSchema.safeParse(json);
    if (!parsed.success) {
      counters.commandsInvalid++;
      const problems = json === undefined ? 'not JSON' : describeProblems(parsed.error);
      errors.note('command-invalid', problems);
      const id = (json as { id?: unknown } | undefined)?.id;
      if (typeof id === 'string' && id.length > 0 && id.length <= 128) {
        this.publishAck({
          id,
          ok: false,
          error: { code: 'invalid_command', message: problems.slice(0, 1000) },
        });
      }
      return;
    }
    const command = parsed.data;
    const outcome = this.instances.apply(command);
    if (outcome.kind === 'duplicate') counters.commandsDuplicate++;
    else commandLatency.record(receivedAt - command.issuedAt);
    if (outcome.kind === 'stale') counters.commandsStale++;
    this.publishAck({ id: command.id, ok: true });
    if (outcome.kind === 'stopped') {
      for (const instance of outcome.instances) this.publishStatus(instance, receivedAt);
    } else if (outcome.kind === 'start') {
      const instance = outcome.instance;
      if (config.startDelayMs === 0) {
        this.startRunning(instance, receivedAt);
        return;
      }
      this.publishStatus(instance, receivedAt);
      wheel.at(receivedAt + config.startDelayMs, () => {
        if (this.instances.holds(instance) && instance.status === 'creating') {
          this.startRunning(instance, Date.now());
        }
      });
    }
  }

  private startRunning(instance: HollowInstance, now: number): void {
    this.instances.markRunning(instance, now);
    this.publishStatus(instance, now);
    this.fleet.runningLatency.record(now - instance.issuedAt);
  }

  private publishAck(ack: { id: string; ok: boolean; error?: { code: string; message: string } }): void {
    const client = this.mqtt;
    const wire = this.wire;
    if (!client || !wire) return;
    client.publish(wire.controlAck, JSON.stringify(ack), { qos: 1 }, this.fleet.onPublished);
    this.fleet.counters.acksSent++;
  }

  /** `nodes/<id>/job` (InstanceStatusReportSchema); a removed instance is reported `stopped`. */
  private publishStatus(instance: HollowInstance, now: number): void {
    const client = this.mqtt;
    const wire = this.wire;
    if (!client || !wire) return;
    const removed = instance.status === 'removed';
    const report = {
      job: instance.jobId,
      instance: instance.number,
      generation: instance.generation,
      status: removed ? 'stopped' : instance.status,
      detail: removed ? 'removed' : instance.status === 'creating' ? 'starting (hollow)' : '',
      containerId: instance.containerId,
      restarts: 0,
      ...(instance.startedAt !== undefined && !removed ? { startedAt: instance.startedAt } : {}),
      ts: now,
    };
    client.publish(wire.jobStatus, JSON.stringify(report), { qos: 1 }, this.fleet.onPublished);
    this.fleet.counters.statusReportsSent++;
  }
}
