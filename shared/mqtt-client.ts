import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { backoffDelay } from './backoff.js';

/**
 * How an MQTT client waits between reconnects: doubling from `baseMs` up to `maxMs`, with jitter. A fleet
 * reconnects at once when its broker comes back (a restart, a network that heals): waits that double
 * and are spread at random keep that from being a storm that times out its own CONNACKs and starts again. The
 * longest wait (2.5-5 s) stays under the cluster manager's default node timeout (6 s): a node whose link blips
 * is back before it counts as silent.
 */
const RECONNECT = { baseMs: 1000, maxMs: 5000 };

/**
 * An MQTT 3.1.1 client with TCP_NODELAY on (without it light traffic waits ~23 ms for Nagle), without
 * mqtt-packet's number cache, that reconnects forever (also after a refused login), with back-off and jitter (RECONNECT). Errors surface as events; the caller logs them.
 */
export function connectMqtt(url: string, options: IClientOptions): MqttClient {
  const { baseMs, maxMs } = RECONNECT;
  let attempt = 0;
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    // A broker taking thousands of connections at once answers CONNECT late: a client that gives up after a
    // few seconds leaves a session the broker just accepted (its last will fires) and adds its retry to the
    // queue. A refused or reset connection fails at once whatever this says.
    connectTimeout: 30_000,
    keepalive: 10,
    // mqtt-packet otherwise builds a Buffer for each of the 65,536 packet ids at the first write: 6 MiB of
    // heap, held for good, to save one 2-byte allocation per packet.
    writeCache: false,
    // mqtt.js stops for good after a refused CONNACK: a broker that refuses a login for a while (a cluster
    // manager re-provisioning it after a restart) would leave the client silent until its process restarts.
    reconnectOnConnackError: true,
    ...options,
    reconnectPeriod: backoffDelay(0, baseMs, maxMs),
  });
  client.on('connect', () => {
    attempt = 0;
    client.options.reconnectPeriod = backoffDelay(0, baseMs, maxMs);
    const stream = client.stream as unknown as { setNoDelay?: (on: boolean) => void };
    stream.setNoDelay?.(true);
  });
  // mqtt.js reads the period each time it schedules a reconnect: lengthen it attempt by attempt.
  client.on('close', () => {
    attempt++;
    client.options.reconnectPeriod = backoffDelay(attempt, baseMs, maxMs);
  });
  return client;
}

export type { MqttClient };
