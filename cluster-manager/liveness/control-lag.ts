import type { MqttClient } from '../../shared/index.js';

/** How often a probe goes round. */
const PROBE_EVERY_MS = 250;
/** Probes older than this that never came back stop counting (a broker restart loses them). */
const FORGET_AFTER_MS = 60_000;

/**
 * How far behind the control pipeline runs: the broker (embedded: a thread of this process) and this process's
 * own MQTT client and event loop. The cluster manager publishes a small probe to itself through the broker every
 * 250 ms; the time one takes to come back is the delay every node's message sees on the same path. A message a
 * node sent in time may reach liveness that much later: its silence is judged against the timeout plus this lag,
 * so a backlog of the cluster manager's own (a connect storm saturating the broker thread) takes no node offline.
 *
 * `lagMs()` is the larger of the last round trip measured and how long the oldest probe still out has been gone
 * (a pipeline that delivers nothing shows a lag that grows).
 */
export class ControlLag {
  private readonly out = new Map<number, number>();
  private sequence = 0;
  private answered = false;
  private lastRoundTripMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly topic: string;

  constructor(
    private readonly mqtt: MqttClient,
    clientId: string,
    private readonly wallClock: () => number = Date.now,
  ) {
    this.topic = `cluster-managers/${clientId}/probe`;
  }

  start(): void {
    this.mqtt.on('connect', () => {
      this.out.clear();
      this.answered = false;
      this.mqtt.subscribe(this.topic, { qos: 0 });
    });
    this.mqtt.on('message', (topic, payload) => {
      if (topic === this.topic) this.received(Number(payload.toString()));
    });
    this.timer ??= setInterval(() => this.send(), PROBE_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  lagMs(): number {
    // Until a probe came back on this connection (a broker that refuses the probe topic never answers), no lag.
    if (!this.answered) return 0;
    const now = this.wallClock();
    let oldest = now;
    for (const [sequence, sentAt] of this.out) {
      if (now - sentAt > FORGET_AFTER_MS) this.out.delete(sequence);
      else oldest = Math.min(oldest, sentAt);
    }
    return Math.max(this.lastRoundTripMs, now - oldest - PROBE_EVERY_MS, 0);
  }

  private send(): void {
    if (!this.mqtt.connected) return;
    const sequence = ++this.sequence;
    this.out.set(sequence, this.wallClock());
    this.mqtt.publish(this.topic, String(sequence), { qos: 0 });
  }

  private received(sequence: number): void {
    const sentAt = this.out.get(sequence);
    if (sentAt === undefined) return;
    this.answered = true;
    this.lastRoundTripMs = this.wallClock() - sentAt;
    // Everything sent before it is either lost (QoS 0) or behind it: it no longer says anything.
    for (const earlier of this.out.keys()) if (earlier <= sequence) this.out.delete(earlier);
  }
}
