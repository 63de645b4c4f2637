import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlLag } from '../../cluster-manager/liveness/control-lag.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { waitFor } from '../helpers/wait.js';

/** The probe through a real broker: small when it keeps up, growing while it delivers nothing. */
describe('the control lag probe', () => {
  let broker: Mosquitto | undefined;
  let client: mqtt.MqttClient | undefined;
  let lag: ControlLag | undefined;

  afterEach(async () => {
    lag?.stop();
    await client?.endAsync(true);
    await broker?.stop();
  });

  it('measures the round trip through the broker, and a broker that stops delivering shows a growing lag', async () => {
    broker = await Mosquitto.start();
    client = mqtt.connect(broker.url, {
      protocolVersion: 4,
      clientId: 'lag-probe-test',
      reconnectPeriod: 200,
    });
    lag = new ControlLag(client, 'lag-probe-test');
    lag.start();
    expect(lag.lagMs()).toBe(0);
    await waitFor(() => client!.connected, 'connected');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(lag.lagMs()).toBeLessThan(200);

    process.kill(broker.pid, 'SIGSTOP');
    try {
      await new Promise((resolve) => setTimeout(resolve, 2000));
      expect(lag.lagMs()).toBeGreaterThanOrEqual(1500);
    } finally {
      process.kill(broker.pid, 'SIGCONT');
    }
    await waitFor(() => lag!.lagMs() < 200, 'the lag back to small once the broker delivers again', 5000);
  });
});
