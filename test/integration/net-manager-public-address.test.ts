import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandRunner } from '../../net-manager/plumbing/ip-command.js';
import { findPublicAddress } from '../../net-manager/plumbing/public-address.js';
import { type TestHost, TestNetwork } from '../helpers/netns.js';

/**
 * Which address a net manager announces to its peers, worked out with the real `ip` inside network namespaces
 * standing in for workers (route lookups only: nothing is sent).
 */
describe('the public address a net manager announces', () => {
  let network: TestNetwork | undefined;
  let host: TestHost;
  let runner: CommandRunner;
  const inHost = (...args: string[]) => host.exec('ip', args);

  beforeAll(() => {
    network = TestNetwork.create();
    host = network.addHost(1);
    runner = new CommandRunner(host.execPrefix);
  });
  afterAll(() => network?.destroy());

  it('is the source address towards a broker on another machine', async () => {
    expect(await findPublicAddress(runner, network!.bridgeAddress)).toEqual({
      ip: host.address,
      source: 'broker',
    });
  });

  it('is never loopback: with the broker on this machine and no default route it asks for --public-ip', async () => {
    await expect(findPublicAddress(runner, '127.0.0.1')).rejects.toThrow(
      /the broker is on this machine .*no default route.*--public-ip/,
    );
    await expect(findPublicAddress(runner, 'localhost')).rejects.toThrow(/--public-ip/);
  });

  it("with the broker on this machine, is the default route's address: towards its gateway, its src, or its device's", async () => {
    inHost('route', 'replace', 'default', 'via', network!.bridgeAddress);
    expect(await findPublicAddress(runner, '127.0.0.1')).toEqual({
      ip: host.address,
      source: 'default-route',
    });

    inHost('addr', 'add', '10.210.0.77/24', 'dev', 'eth0');
    inHost('route', 'replace', 'default', 'via', network!.bridgeAddress, 'src', '10.210.0.77');
    expect((await findPublicAddress(runner, '127.0.0.1')).ip).toBe('10.210.0.77');

    inHost('route', 'replace', 'default', 'dev', 'eth0');
    expect((await findPublicAddress(runner, '127.0.0.1')).ip).toBe(host.address);

    inHost('route', 'del', 'default');
    inHost('addr', 'del', '10.210.0.77/24', 'dev', 'eth0');
  });

  it('says there is no route to a broker it cannot reach', async () => {
    await expect(findPublicAddress(runner, '198.51.100.7')).rejects.toThrow(
      /no route to the broker at 198\.51\.100\.7.*--public-ip/,
    );
  });
});
