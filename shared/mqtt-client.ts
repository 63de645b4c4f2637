import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

/**
 * An MQTT 3.1.1 client with TCP_NODELAY on (without it light traffic waits ~23 ms for Nagle) that
 * reconnects forever. Errors surface as events; the caller logs them.
 */
export function connectMqtt(url: string, options: IClientOptions): MqttClient {
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    reconnectPeriod: 1000,
    connectTimeout: 5000,
    keepalive: 10,
    ...options,
  });
  client.on('connect', () => {
    const stream = client.stream as unknown as { setNoDelay?: (on: boolean) => void };
    stream.setNoDelay?.(true);
  });
  return client;
}

export type { MqttClient };
