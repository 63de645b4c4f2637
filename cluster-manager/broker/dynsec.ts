import { randomUUID } from 'node:crypto';
import type { Logger, MqttClient } from '../../shared/index.js';
import { type BrokerAcl, nodeBrokerAcls, OPERATOR_BROKER_ACLS } from './acl.js';

const CONTROL_TOPIC = '$CONTROL/dynamic-security/v1';
const RESPONSE_TOPIC = `${CONTROL_TOPIC}/response`;
const TIMEOUT_MS = 10_000;
/** The role the cluster manager gives its own login: every node topic. */
const CLUSTER_MANAGER_ROLE = 'edge-cluster-manager';
const OPERATOR_ROLE = 'edge-operator';
const nodeRole = (nodeId: string) => `edge-node-${nodeId}`;

interface DynsecCommand {
  command: string;
  [field: string]: unknown;
}
interface DynsecResponse {
  command: string;
  error?: string;
  correlationData?: string;
  data?: unknown;
}

/**
 * Per-node logins on an external mosquitto, through its dynamic security plugin (`$CONTROL/dynamic-security/v1`),
 * so that the external broker isolates nodes as the embedded one does: each node gets a role with its own topics
 * (acl.ts), and two clients bound to their client ids, `<id>` as `node-<id>` (node engine) and `net-<id>` as
 * `net-<id>` (net manager), with the node's secret. The `operator` login (the telemetry token) may only watch.
 * The cluster manager's own login must hold mosquitto's dynsec admin role; it gives itself access to every node
 * topic once (mosquitto drops a client whose roles change: it reconnects).
 */
export class DynamicSecurity {
  private readonly waiting = new Map<string, (response: DynsecResponse) => void>();
  /** Node ids provisioned by this process, with the secret they were given (a hash would do as well). */
  private readonly provisioned = new Map<string, string>();
  /** The operator login is set once per process: setting its password again would drop its subscribers. */
  private operatorSet = false;
  /** Resolves once the cluster manager's own role is in effect: nodes are provisioned after that. */
  private readonly ready: Promise<void>;
  private markReady!: () => void;

  constructor(
    private readonly client: MqttClient,
    private readonly ownUsername: string,
    private readonly operatorPassword: string,
    private readonly logger: Logger,
  ) {
    this.ready = new Promise((resolve) => {
      this.markReady = resolve;
    });
    client.on('message', (topic, payload) => {
      if (topic !== RESPONSE_TOPIC) return;
      try {
        const { responses } = JSON.parse(payload.toString()) as { responses?: DynsecResponse[] };
        for (const response of responses ?? []) {
          const done = response.correlationData ? this.waiting.get(response.correlationData) : undefined;
          done?.(response);
        }
      } catch {
        this.logger.warn('unreadable dynamic security response');
      }
    });
  }

  /** On every connect: the response topic, and the cluster manager's and operator's roles and logins. */
  async prepare(): Promise<void> {
    await this.client.subscribeAsync(RESPONSE_TOPIC, { qos: 1 });
    if (!this.operatorSet) {
      await this.ensureRole(OPERATOR_ROLE, OPERATOR_BROKER_ACLS, { update: 'always' });
      await this.ensureClient('operator', this.operatorPassword, OPERATOR_ROLE, { setPassword: true });
      this.operatorSet = true;
    }
    const own = await this.run({ command: 'getClient', username: this.ownUsername });
    const roles = ((own.data as { client?: { roles?: { rolename: string }[] } })?.client?.roles ?? []).map(
      (role) => role.rolename,
    );
    if (roles.includes(CLUSTER_MANAGER_ROLE)) {
      this.markReady();
      return;
    }
    await this.ensureRole(
      CLUSTER_MANAGER_ROLE,
      [
        { acltype: 'publishClientSend', topic: 'nodes/#', allow: true, priority: 0 },
        { acltype: 'subscribePattern', topic: 'nodes/#', allow: true, priority: 0 },
      ],
      { update: 'always' },
    );
    // Mosquitto drops a client whose roles change before it answers: nothing to wait for. It reconnects, and
    // this runs again and finds the role.
    this.logger.info('giving the cluster manager its broker role (mosquitto reconnects it once)');
    this.client.publish(
      CONTROL_TOPIC,
      JSON.stringify({
        commands: [{ command: 'addClientRole', username: this.ownUsername, rolename: CLUSTER_MANAGER_ROLE }],
      }),
      { qos: 1 },
    );
  }

  /**
   * The node's role and its two logins, before it hears its registration answer. Ones that exist are left as
   * they are unless the node's secret changed: mosquitto drops the connections of a login whose password is
   * set, and a whole fleet registers again after every restart of the cluster manager.
   */
  async provisionNode(nodeId: string, secret: string, secretChanged: boolean): Promise<void> {
    if (this.provisioned.get(nodeId) === secret) return;
    await Promise.race([
      this.ready,
      new Promise((_, reject) =>
        setTimeout(
          () => reject(new Error('the broker is not ready for node logins yet')),
          TIMEOUT_MS,
        ).unref(),
      ),
    ]);
    await this.ensureRole(nodeRole(nodeId), nodeBrokerAcls(nodeId), { update: 'if-changed' });
    for (const [username, clientid] of [
      [nodeId, `node-${nodeId}`],
      [`net-${nodeId}`, `net-${nodeId}`],
    ] as const)
      await this.ensureClient(username, secret, nodeRole(nodeId), { clientid, setPassword: secretChanged });
    this.provisioned.set(nodeId, secret);
  }

  /** The node was removed: its logins go (mosquitto disconnects them), and its role. */
  async removeNode(nodeId: string): Promise<void> {
    this.provisioned.delete(nodeId);
    for (const username of [nodeId, `net-${nodeId}`]) await this.run({ command: 'deleteClient', username });
    await this.run({ command: 'deleteRole', rolename: nodeRole(nodeId) });
  }

  /**
   * Creates the role. One that exists gets these ACLs with `update: 'always'`; with `'if-changed'` only when its
   * ACLs differ (a role an older version made, without a newer version's topics): recent mosquittos disconnect
   * a role's clients when its ACLs are set, and every node registers again after a restart of the cluster manager.
   */
  private async ensureRole(
    rolename: string,
    acls: BrokerAcl[],
    { update }: { update: 'always' | 'if-changed' },
  ): Promise<void> {
    const created = await this.run({ command: 'createRole', rolename, acls });
    if (!created.error) return;
    if (!/exists/i.test(created.error)) throw new Error(`createRole ${rolename}: ${created.error}`);
    if (update === 'if-changed') {
      const existing = await this.send({ command: 'getRole', rolename });
      const held = (existing.data as { role?: { acls?: BrokerAcl[] } } | undefined)?.role?.acls ?? [];
      if (sameAcls(held, acls)) return;
      this.logger.info({ rolename }, 'giving a broker role the ACLs of this version');
    }
    await this.send({ command: 'modifyRole', rolename, acls });
  }

  /**
   * Creates the login; one that exists gets this password with `setPassword` (mosquitto then drops its
   * connections), else stays.
   */
  private async ensureClient(
    username: string,
    password: string,
    rolename: string,
    { clientid, setPassword }: { clientid?: string; setPassword: boolean },
  ): Promise<void> {
    const created = await this.run({
      command: 'createClient',
      username,
      password,
      ...(clientid ? { clientid } : {}),
      roles: [{ rolename }],
    });
    if (!created.error) return;
    if (!/exists/i.test(created.error)) throw new Error(`createClient ${username}: ${created.error}`);
    if (setPassword) await this.send({ command: 'setClientPassword', username, password });
  }

  /** Runs a command; throws on an error answer. */
  private async send(command: DynsecCommand): Promise<DynsecResponse> {
    const response = await this.run(command);
    if (response.error) throw new Error(`${command.command}: ${response.error}`);
    return response;
  }

  /** Runs a command and returns its answer, error or not; throws when none comes in time. */
  private run(command: DynsecCommand): Promise<DynsecResponse> {
    const correlationData = randomUUID();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(correlationData);
        reject(new Error(`no answer from the broker's dynamic security plugin to ${command.command}`));
      }, TIMEOUT_MS);
      this.waiting.set(correlationData, (response) => {
        clearTimeout(timer);
        this.waiting.delete(correlationData);
        resolve(response);
      });
      this.client.publish(CONTROL_TOPIC, JSON.stringify({ commands: [{ ...command, correlationData }] }), {
        qos: 1,
      });
    });
  }
}

/** Whether two ACL lists say the same, in any order. */
function sameAcls(a: BrokerAcl[], b: BrokerAcl[]): boolean {
  const key = (acl: BrokerAcl) => `${acl.acltype} ${acl.topic} ${acl.allow} ${acl.priority}`;
  const keys = (acls: BrokerAcl[]) => acls.map(key).sort().join('\n');
  return keys(a) === keys(b);
}
