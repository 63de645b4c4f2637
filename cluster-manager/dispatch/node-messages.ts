import type { z } from 'zod';
import type {
  CommandAck,
  InstanceStatusReport,
  LogStreamMessage,
  NetAnnounce,
  NetQuery,
  NodeTelemetry,
} from '../../shared/index.js';
import {
  CommandAckSchema,
  describeProblems,
  InstanceStatusReportSchema,
  type Logger,
  LogStreamMessageSchema,
  type MqttClient,
  NetAnnounceSchema,
  NetQuerySchema,
  NodeTelemetrySchema,
  parseJson,
  parseNodeTopic,
  topicFilters,
} from '../../shared/index.js';

export interface NodeMessageHandlers {
  telemetry(nodeId: string, telemetry: NodeTelemetry): void;
  status(nodeId: string, report: InstanceStatusReport): void;
  ack(nodeId: string, ack: CommandAck): void;
  /** The retained `online`/`offline` of `nodes/<id>/status` (the last will says `offline`). */
  presence(nodeId: string, online: boolean): void;
  /** A net manager's overlay endpoint, on every connect. */
  netAnnounce(nodeId: string, announce: NetAnnounce): void;
  /** A net manager asks which job owns an overlay address. */
  netQuery(nodeId: string, query: NetQuery): void;
  /** A log stream's chunk, start or end. */
  logStream(nodeId: string, message: LogStreamMessage): void;
  /** A message that did not parse: logged, counted, dropped. */
  rejected(topic: string, reason: string): void;
}

/** Subscribes to what nodes publish and hands each message, parsed with its schema, to its handler. */
export function subscribeToNodes(mqtt: MqttClient, handlers: NodeMessageHandlers, logger: Logger): void {
  const filters = Object.values(topicFilters);
  mqtt.on('connect', () => {
    mqtt.subscribe(filters, { qos: 1 }, (error) => {
      if (error) logger.error({ err: error.message }, 'subscribing to node topics failed');
    });
  });
  mqtt.on('message', (topic, payload, packet) => {
    try {
      route(topic, payload, packet.retain, handlers);
    } catch (error) {
      // A handler bug must not take the process down with it; the message is dropped and counted.
      logger.error({ topic, err: (error as Error).stack }, 'handling a node message failed');
      handlers.rejected(topic, 'handler error');
    }
  });
}

function route(topic: string, payload: Buffer, retained: boolean, handlers: NodeMessageHandlers): void {
  const parsed = parseNodeTopic(topic);
  if (!parsed) return;
  const { nodeId, kind } = parsed;
  if (kind === 'status') {
    const text = payload.toString();
    // A retained `offline` met on (re)subscribing may be a will a stopping broker published for a node that
    // is fine: the node timeout tells. Only a will published live counts.
    if (text === 'offline' && retained) return;
    if (text === 'online' || text === 'offline') handlers.presence(nodeId, text === 'online');
    else if (text !== '') handlers.rejected(topic, 'status must be online or offline');
    return;
  }
  const decode = <T>(schema: z.ZodType<T>): T | undefined => {
    const json = parseJson(payload);
    if (json === undefined) {
      handlers.rejected(topic, 'not JSON');
      return undefined;
    }
    const result = schema.safeParse(json);
    if (!result.success) {
      handlers.rejected(topic, describeProblems(result.error));
      return undefined;
    }
    return result.data;
  };
  switch (kind) {
    case 'information': {
      const telemetry = decode(NodeTelemetrySchema);
      if (telemetry) handlers.telemetry(nodeId, telemetry);
      break;
    }
    case 'jobStatus': {
      const report = decode(InstanceStatusReportSchema);
      if (report) handlers.status(nodeId, report);
      break;
    }
    case 'controlAck': {
      const ack = decode(CommandAckSchema);
      if (ack) handlers.ack(nodeId, ack);
      break;
    }
    case 'netAnnounce': {
      const announce = decode(NetAnnounceSchema);
      if (announce) handlers.netAnnounce(nodeId, announce);
      break;
    }
    case 'netQuery': {
      const query = decode(NetQuerySchema);
      if (query) handlers.netQuery(nodeId, query);
      break;
    }
    case 'logsStream': {
      const message = decode(LogStreamMessageSchema);
      if (message) handlers.logStream(nodeId, message);
      break;
    }
    default:
      break;
  }
}
