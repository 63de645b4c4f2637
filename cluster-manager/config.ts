import { readProgramOptions, resolveDataDir } from '../shared/index.js';

export const clusterManagerOptions = {
  'http-port': {
    env: 'CM_HTTP_PORT',
    type: 'integer',
    default: 10100,
    description: 'HTTP API, dashboard and Socket.IO port',
  },
  host: { env: 'CM_HOST', type: 'string', default: '0.0.0.0', description: 'address to listen on' },
  'mqtt-port': {
    env: 'CM_MQTT_PORT',
    type: 'integer',
    default: 10003,
    description: 'embedded MQTT broker port',
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
  'worker-subnets': {
    env: 'CM_WORKER_SUBNETS',
    type: 'string',
    default: '10.18.0.0-10.29.255.255',
    description: 'worker subnet range (a /26 per worker)',
  },
  'service-subnet': {
    env: 'CM_SERVICE_SUBNET',
    type: 'string',
    default: '10.30.0.0/16',
    description: 'instance and service IPs',
  },
} as const;

export interface ClusterManagerConfig {
  httpPort: number;
  host: string;
  mqttPort: number;
  mqttUrl?: string;
  mqttUsername?: string;
  mqttPassword?: string;
  mqttNodeUsername?: string;
  mqttNodePassword?: string;
  dataDir: string;
  joinToken?: string;
  apiToken?: string;
  nodeTimeoutMs: number;
  telemetryIntervalMs: number;
  advertiseMqttUrl?: string;
  workerSubnets: string;
  serviceSubnet: string;
}

export function readClusterManagerConfig(): ClusterManagerConfig {
  const o = readProgramOptions(
    'edge-cluster-manager',
    'The cluster manager: HTTP API, node registry (Socket.IO /init), MQTT broker, scheduler and SQLite state.',
    clusterManagerOptions,
  );
  return {
    httpPort: o['http-port'],
    host: o.host,
    mqttPort: o['mqtt-port'],
    mqttUrl: o['mqtt-url'],
    mqttUsername: o['mqtt-username'],
    mqttPassword: o['mqtt-password'],
    mqttNodeUsername: o['mqtt-node-username'],
    mqttNodePassword: o['mqtt-node-password'],
    dataDir: resolveDataDir(o['data-dir']),
    joinToken: o['join-token'],
    apiToken: o['api-token'],
    nodeTimeoutMs: o['node-timeout'],
    telemetryIntervalMs: o['telemetry-interval'],
    advertiseMqttUrl: o['advertise-mqtt-url'],
    workerSubnets: o['worker-subnets'],
    serviceSubnet: o['service-subnet'],
  };
}
