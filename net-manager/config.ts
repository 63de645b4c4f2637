import {
  isIpv4,
  type OptionSpecs,
  type ParsedOptions,
  parseCidr,
  resolveDataDir,
  unreachableFromPeers,
} from '../shared/index.js';
import { MTU_LIMITS } from './plumbing/underlay-mtu.js';

/** The flags of CONTRACT.md, with their env vars and defaults. */
export const optionSpecs = {
  'data-dir': {
    env: 'NM_DATA_DIR',
    description: 'state (node, attachments) and the local API socket net-manager.sock',
    type: 'string',
    default: 'var/net-manager',
  },
  'public-ip': {
    env: 'NM_PUBLIC_IP',
    description:
      "address peers send overlay UDP to (default: the one that routes to the broker; with the broker on this machine, the default route's)",
    type: 'string',
  },
  'udp-port': { env: 'NM_UDP_PORT', description: 'overlay UDP port', type: 'integer', default: 50103 },
  'tun-name': { env: 'NM_TUN', description: 'TUN device name', type: 'string', default: 'edge0' },
  'overlay-route': {
    env: 'NM_OVERLAY_ROUTE',
    description: 'overlay route through the TUN (covers worker and service subnets)',
    type: 'string',
    default: '10.16.0.0/12',
  },
  cipher: {
    env: 'NM_CIPHER',
    description:
      'data cipher: auto (AES-256-GCM with peers where both CPUs have AES instructions, else ChaCha20-Poly1305) or chacha20-poly1305',
    type: 'string',
    default: 'auto',
  },
  'rekey-seconds': {
    env: 'NM_REKEY_SECONDS',
    description: 'encrypted overlay: new session keys with a peer in use after this many seconds (2-120)',
    type: 'integer',
    default: 120,
  },
  mtu: {
    env: 'NM_MTU',
    description:
      "the overlay's MTU (default: the underlay's towards the broker, less 80 bytes encrypted or 50 unencrypted)",
    type: 'integer',
  },
  'no-offload': {
    env: 'NM_NO_OFFLOAD',
    description:
      'move every packet on its own: no TSO super-packets from the TUN, no UDP GSO/GRO (for kernels without them)',
    type: 'boolean',
    default: false,
  },
  'no-fast-path': {
    env: 'NM_NO_FAST_PATH',
    description:
      'every packet through the TypeScript translator: no flow cache in the addon (to compare, or to rule it out)',
    type: 'boolean',
    default: false,
  },
  bridge: {
    env: 'NM_BRIDGE',
    description: "bridge joining this worker's containers (gateway: .1 of the worker subnet)",
    type: 'string',
    default: 'edgebr0',
  },
} satisfies OptionSpecs;

export interface NetManagerConfig {
  dataDir: string;
  socketPath: string;
  publicIp: string | undefined;
  udpPort: number;
  tunName: string;
  bridgeName: string;
  overlayRoute: string;
  /** `--mtu`; undefined: from the underlay (plumbing/underlay-mtu.ts). */
  mtu: number | undefined;
  /** `--cipher`: whether AES-256-GCM is offered in handshakes (`auto`, where this CPU has AES instructions). */
  cipher: 'auto' | 'chacha20-poly1305';
  /** `--rekey-seconds`: how often sessions with a peer in use get new keys (default 120 s, WireGuard's). */
  rekeyAfterMs: number | undefined;
  /** TSO/GRO on the TUN and GSO/GRO on the UDP socket (see net-manager/tun.ts); off with --no-offload. */
  offload: boolean;
  /** The fast path for established flows (routing/fast-path.ts); off with --no-fast-path. */
  fastPath: boolean;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Linux interface names: at most 15 bytes, no slash, no whitespace. */
const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function buildConfig(options: ParsedOptions<typeof optionSpecs>): NetManagerConfig {
  const publicIp = options['public-ip'];
  if (publicIp !== undefined && !isIpv4(publicIp))
    throw new ConfigError(`--public-ip: "${publicIp}" is not an IPv4 address`);
  const unreachable = publicIp === undefined ? undefined : unreachableFromPeers(publicIp);
  if (unreachable)
    throw new ConfigError(
      `--public-ip: ${publicIp} is ${unreachable}: workers on other machines cannot reach it`,
    );
  if (options['udp-port'] < 1 || options['udp-port'] > 65535)
    throw new ConfigError('--udp-port must be between 1 and 65535');
  for (const flag of ['tun-name', 'bridge'] as const) {
    if (!INTERFACE_NAME.test(options[flag]))
      throw new ConfigError(
        `--${flag}: "${options[flag]}" is not an interface name (1-15 of A-Z a-z 0-9 _ . -)`,
      );
  }
  if (options['tun-name'] === options.bridge) throw new ConfigError('--tun-name and --bridge must differ');
  let route: ReturnType<typeof parseCidr>;
  try {
    route = parseCidr(options['overlay-route']);
  } catch (error) {
    throw new ConfigError(`--overlay-route: ${(error as Error).message}`);
  }
  if (route.prefix < 8)
    throw new ConfigError('--overlay-route is wider than a /8: it would swallow the underlay');
  if (options.cipher !== 'auto' && options.cipher !== 'chacha20-poly1305')
    throw new ConfigError(`--cipher: "${options.cipher}" is not auto or chacha20-poly1305`);
  if (options['rekey-seconds'] < 2 || options['rekey-seconds'] > 120)
    throw new ConfigError('--rekey-seconds must be between 2 and 120 (sessions end after 180 s)');
  const mtu = options.mtu;
  if (mtu !== undefined && (mtu < MTU_LIMITS.min || mtu > MTU_LIMITS.max))
    throw new ConfigError(`--mtu must be between ${MTU_LIMITS.min} and ${MTU_LIMITS.max}`);
  const dataDir = resolveDataDir(options['data-dir']);
  // A unix socket path holds at most 107 bytes.
  if (Buffer.byteLength(`${dataDir}/net-manager.sock`) > 107)
    throw new ConfigError(`--data-dir: "${dataDir}" is too long for a unix socket path inside it`);
  return {
    dataDir,
    socketPath: `${dataDir}/net-manager.sock`,
    publicIp,
    udpPort: options['udp-port'],
    tunName: options['tun-name'],
    bridgeName: options.bridge,
    overlayRoute: options['overlay-route'],
    mtu: options.mtu,
    rekeyAfterMs: options['rekey-seconds'] * 1000,
    cipher: options.cipher as NetManagerConfig['cipher'],
    offload: !options['no-offload'],
    fastPath: !options['no-fast-path'],
  };
}
