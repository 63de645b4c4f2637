import { type ParsedOptions, readProgramOptions, resolveDataDir, UsageError } from '../shared/index.js';
import { type AddressPlan, parseAddressPlan } from './network/address-plan.js';

const PROGRAM = 'edge-cluster-manager';

export const clusterManagerOptions = {
  'http-port': {
    env: 'CM_HTTP_PORT',
    type: 'integer',
    default: 10100,
    description: 'HTTPS API, dashboard and Socket.IO port',
  },
  host: { env: 'CM_HOST', type: 'string', default: '0.0.0.0', description: 'address to listen on' },
  'mqtt-port': {
    env: 'CM_MQTT_PORT',
    type: 'integer',
    default: 10003,
    description: 'embedded MQTT broker port (MQTTS)',
  },
  'mqtt-url': {
    env: 'CM_MQTT_URL',
    type: 'string',
    description: 'use this external MQTT broker instead of the embedded one',
  },
  'mqtt-username': {
    env: 'CM_MQTT_USERNAME',
    type: 'string',
    description: "the cluster manager's login on an external broker",
  },
  'mqtt-password': {
    env: 'CM_MQTT_PASSWORD',
    type: 'string',
    description: "the cluster manager's password on an external broker",
  },
  'mqtt-dynsec': {
    env: 'CM_MQTT_DYNSEC',
    type: 'boolean',
    default: false,
    description:
      'external broker: a mosquitto with its dynamic security plugin, on which --mqtt-username is a dynsec admin: every node gets its own login and topics there',
  },
  'mqtt-node-username': {
    env: 'CM_MQTT_NODE_USERNAME',
    type: 'string',
    description: 'external broker: the login handed to nodes',
  },
  'mqtt-node-password': {
    env: 'CM_MQTT_NODE_PASSWORD',
    type: 'string',
    description: 'external broker: the password handed to nodes',
  },
  'data-dir': {
    env: 'CM_DATA_DIR',
    type: 'string',
    default: 'var/cluster-manager',
    description: 'SQLite database and tokens',
  },
  'join-token': {
    env: 'CM_JOIN_TOKEN',
    type: 'string',
    description: 'token nodes register with (default: generated once, kept in <data-dir>/join-token)',
  },
  'api-token': {
    env: 'CM_API_TOKEN',
    type: 'string',
    description: 'operator bearer token (default: generated once, kept in <data-dir>/api-token)',
  },
  'node-timeout': {
    env: 'CM_NODE_TIMEOUT_MS',
    type: 'integer',
    default: 6000,
    description: 'a node with no telemetry for this many ms is offline',
  },
  'telemetry-interval': {
    env: 'CM_TELEMETRY_MS',
    type: 'integer',
    default: 2000,
    description: 'telemetry interval handed to nodes (ms)',
  },
  'advertise-mqtt-url': {
    env: 'CM_ADVERTISE_MQTT_URL',
    type: 'string',
    description: 'the MQTT URL handed to nodes',
  },
  'registration-rate': {
    env: 'CM_REGISTRATION_RATE',
    type: 'integer',
    default: 50,
    description:
      'node registrations per second per source address, bursts of 10 s worth (0: no limit; raise it for big fleets behind one NAT)',
  },
  'max-streams': {
    env: 'CM_MAX_STREAMS',
    type: 'integer',
    default: 256,
    description: 'clients following GET /api/stream at once (dashboards, edgectl -f/-w); more get 503',
  },
  insecure: {
    env: 'CM_INSECURE',
    type: 'boolean',
    default: false,
    description:
      'plain HTTP, WS and MQTT instead of TLS: tokens, node secrets and job env cross the network in clear',
  },
  'rendezvous-port': {
    env: 'CM_RENDEZVOUS_PORT',
    type: 'integer',
    default: 10100,
    description:
      'UDP port where net managers learn the address and port their NAT gives their overlay traffic (0: any free port)',
  },
  'overlay-plaintext': {
    env: 'CM_OVERLAY_PLAINTEXT',
    type: 'boolean',
    default: false,
    description:
      'overlay traffic between workers in clear, unauthenticated (for networks you trust end to end); encrypted otherwise',
  },
  'tls-san': {
    env: 'CM_TLS_SAN',
    type: 'string',
    description:
      "more names and addresses for the server certificate, comma-separated (this host's are always in)",
  },
  'tls-cert': {
    env: 'CM_TLS_CERT',
    type: 'string',
    description: 'a server certificate file (PEM) to use instead of one from the cluster CA (with --tls-key)',
  },
  'tls-key': { env: 'CM_TLS_KEY', type: 'string', description: "--tls-cert's private key file (PEM)" },
  'tls-ca': {
    env: 'CM_TLS_CA',
    type: 'string',
    description:
      'the CA file that signed --tls-cert: join tokens pin it (without it, nodes use the system CAs)',
  },
  'worker-subnets': {
    env: 'CM_WORKER_SUBNETS',
    type: 'string',
    default: '10.18.0.0-10.29.255.255',
    description: 'worker subnet range, a-b or a CIDR block (a /26 per worker with a net manager)',
  },
  'service-subnet': {
    env: 'CM_SERVICE_SUBNET',
    type: 'string',
    default: '10.30.0.0/16',
    description: 'CIDR block of instance and service IPs',
  },
} as const;

export interface ClusterManagerConfig {
  httpPort: number;
  host: string;
  mqttPort: number;
  mqttUrl?: string;
  mqttUsername?: string;
  mqttPassword?: string;
  /** `--mqtt-dynsec`: provision per-node logins on the external mosquitto. */
  mqttDynsec: boolean;
  mqttNodeUsername?: string;
  mqttNodePassword?: string;
  dataDir: string;
  joinToken?: string;
  apiToken?: string;
  nodeTimeoutMs: number;
  telemetryIntervalMs: number;
  advertiseMqttUrl?: string;
  /** `--registration-rate`: per source address per second; 0 is no limit. */
  registrationRatePerS: number;
  /** `--max-streams`: streams of `GET /api/stream` open at once. */
  maxStreams: number;
  /** Plain text on every port (`--insecure`); otherwise HTTPS, WSS and MQTTS. */
  insecure: boolean;
  /** `--overlay-plaintext`: net managers send overlay packets unencrypted and take them unauthenticated. */
  overlayPlaintext: boolean;
  /** `--rendezvous-port` (UDP). */
  rendezvousPort: number;
  /** `--tls-san`, split. */
  tlsSans: string[];
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsCaFile?: string;
  /** From `--worker-subnets` and `--service-subnet`. */
  addressPlan: AddressPlan;
}

/** The config from parsed flags; throws UsageError for values that parse but make no sense together. */
export function buildClusterManagerConfig(
  o: ParsedOptions<typeof clusterManagerOptions>,
): ClusterManagerConfig {
  if ((o['tls-cert'] === undefined) !== (o['tls-key'] === undefined))
    throw new UsageError('--tls-cert and --tls-key go together: give both, or neither for the cluster CA');
  if (o.insecure && (o['tls-cert'] || o['tls-san'] || o['tls-ca']))
    throw new UsageError(
      '--insecure turns TLS off: it does not go with --tls-cert, --tls-key, --tls-ca or --tls-san',
    );
  if (o['mqtt-dynsec'] && (!o['mqtt-url'] || !o['mqtt-username']))
    throw new UsageError('--mqtt-dynsec needs --mqtt-url and --mqtt-username (a dynamic security admin)');
  if (o['mqtt-dynsec'] && (o['mqtt-node-username'] || o['mqtt-node-password']))
    throw new UsageError(
      '--mqtt-dynsec gives each node its own login: it does not go with --mqtt-node-username',
    );
  if (o['api-token'] && o['join-token'] && o['api-token'] === o['join-token'])
    throw new UsageError('--api-token and --join-token must differ: every worker holds the join token');
  return {
    httpPort: o['http-port'],
    host: o.host,
    mqttPort: o['mqtt-port'],
    mqttUrl: o['mqtt-url'],
    mqttUsername: o['mqtt-username'],
    mqttPassword: o['mqtt-password'],
    mqttDynsec: o['mqtt-dynsec'],
    mqttNodeUsername: o['mqtt-node-username'],
    mqttNodePassword: o['mqtt-node-password'],
    dataDir: resolveDataDir(o['data-dir']),
    joinToken: o['join-token'],
    apiToken: o['api-token'],
    nodeTimeoutMs: o['node-timeout'],
    telemetryIntervalMs: o['telemetry-interval'],
    advertiseMqttUrl: o['advertise-mqtt-url'],
    registrationRatePerS: o['registration-rate'],
    maxStreams: o['max-streams'],
    insecure: o.insecure,
    overlayPlaintext: o['overlay-plaintext'],
    rendezvousPort: o['rendezvous-port'],
    tlsSans: (o['tls-san'] ?? '')
      .split(',')
      .map((name) => name.trim())
      .filter(Boolean),
    tlsCertFile: o['tls-cert'],
    tlsKeyFile: o['tls-key'],
    tlsCaFile: o['tls-ca'],
    addressPlan: parseAddressPlan(o['worker-subnets'], o['service-subnet']),
  };
}

/** Flags and env of this process; `--help` prints help and exits 0, a bad value prints one line and exits 2. */
export function readClusterManagerConfig(): ClusterManagerConfig {
  const o = readProgramOptions(
    PROGRAM,
    'The cluster manager: HTTP API, node registry (Socket.IO /init), MQTT broker, scheduler and SQLite state.',
    clusterManagerOptions,
  );
  try {
    return buildClusterManagerConfig(o);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${PROGRAM}: ${error.message} (see --help)\n`);
    process.exit(2);
  }
}
