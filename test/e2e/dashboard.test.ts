import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { TestNode } from '../helpers/test-node.js';

/** Debian's Chromium, as TESTING.md says: no browser download works here. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

describe('the web dashboard in a real browser', () => {
  let cm: RunningClusterManager;
  let node: TestNode;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    cm = await startClusterManager();
    node = new TestNode(cm, TestNode.info('dash-node'));
    await node.register({ token: cm.joinToken });
    await node.connectMqtt(true);
    await node.sendTelemetry();
    // The browser trusts exactly this server's key (as an operator who accepted it would), not any certificate.
    const serverKey = new X509Certificate(
      readFileSync(join(cm.dataDir, 'tls', 'server.pem')),
    ).publicKey.export({ type: 'spki', format: 'der' });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        `--ignore-certificate-errors-spki-list=${createHash('sha256').update(serverKey).digest('base64')}`,
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    page = await browser.newPage();
  });
  afterAll(async () => {
    await browser?.close();
    await node?.close();
    await cm?.stop();
  });

  it('asks for the token, then shows nodes and jobs, and deploys a job from JSON with field errors shown', async () => {
    // The page runs under its Content-Security-Policy: anything it blocks shows up as a console error.
    const blocked: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error' && /Content Security Policy/i.test(message.text()))
        blocked.push(message.text());
    });
    await page.goto(cm.url);
    expect(page.url()).toMatch(/^https:\/\//);
    await page.locator('#token-input').fill('wrong-token');
    await page.locator('#login-form button[type=submit]').click();
    await expect.poll(() => page.locator('#login-error').textContent()).toMatch(/./);

    await page.locator('#token-input').fill(cm.apiToken);
    await page.locator('#login-form button[type=submit]').click();
    await expect.poll(() => page.locator('#nodes').textContent(), { timeout: 10_000 }).toContain('dash-node');

    await page
      .locator('#deploy-spec')
      .fill(JSON.stringify({ name: 'dash-job', image: 'edge/busybox:latest', replicas: 0 }));
    await page.locator('#deploy-form button[type=submit]').click();
    await expect.poll(() => page.locator('#deploy-result').textContent()).toContain('replicas');

    await page
      .locator('#deploy-spec')
      .fill(JSON.stringify({ name: 'dash-job', image: 'edge/busybox:latest' }));
    await page.locator('#deploy-form button[type=submit]').click();
    await expect.poll(() => page.locator('#deploy-result').textContent()).toContain('Created job dash-job');
    await expect.poll(() => page.locator('#jobs').textContent(), { timeout: 10_000 }).toContain('dash-job');
    const jobs = (await (await cm.api('/api/jobs')).json()) as { name: string }[];
    expect(jobs.map((job) => job.name)).toEqual(['dash-job']);
    await page.screenshot({ path: join(tmpdir(), 'edge-dashboard.png'), fullPage: true });
    expect(blocked).toEqual([]);
    // The token is kept for this tab only (sessionStorage), not for every later visitor of the browser.
    const storage = '[globalThis.sessionStorage.length > 0, globalThis.localStorage.length]';
    expect(await page.evaluate(storage)).toEqual([true, 0]);
  });

  it('follows the push: a job deployed through the API and new telemetry show without a reload or a poll', async () => {
    const requests: string[] = [];
    page.on('request', (request) => {
      const url = new URL(request.url());
      requests.push(`${request.method()} ${url.pathname}${url.search}`);
    });
    // The page keeps one stream open (GET /api/stream), and shows what the last test left.
    await expect.poll(() => cm.manager.streams.stats().open).toBe(1);
    const created = await cm.api('/api/jobs', {
      method: 'POST',
      json: { name: 'pushed-job', image: 'edge/busybox:latest' },
    });
    const job = (await created.json()) as { id: string };
    await expect.poll(() => page.locator('#jobs').textContent(), { timeout: 10_000 }).toContain('pushed-job');
    await expect
      .poll(() => page.locator('#events').textContent())
      .toContain('job pushed-job created with 1 replica(s)');
    await node.sendTelemetry([], { cpu: { percent: 87, cores: 4, load1: 1 } });
    await expect.poll(() => page.locator('#nodes').textContent(), { timeout: 10_000 }).toContain('87%');
    // Only what a notice named was fetched again: that job and that node; no list was polled, no page loaded.
    expect(requests).toContain(`GET /api/jobs/${job.id}`);
    expect(requests).toContain(`GET /api/nodes/${node.ack!.nodeId}`);
    const polled = requests.filter((request) =>
      /^GET \/(api\/jobs|api\/nodes|api\/events)?(\?.*)?$/.test(request),
    );
    expect(polled).toEqual([]);
  });

  it('shows a node in detail, acts on nodes and jobs, deploys YAML, follows logs, at desktop and phone widths', async () => {
    const nodeId = node.ack!.nodeId;
    // The node answers log requests as a node engine would: opened, then what the instance printed.
    node.mqtt!.on('message', (topic, payload) => {
      if (topic !== topics.logsControl(nodeId)) return;
      const control = JSON.parse(payload.toString()) as { type: string; requestId: string };
      if (control.type !== 'open') return;
      void node.publish(topics.logsStream(nodeId), {
        type: 'opened',
        requestId: control.requestId,
        technology: 'docker',
      });
      void node.publish(topics.logsStream(nodeId), {
        type: 'chunk',
        requestId: control.requestId,
        offset: 0,
        stream: 'stdout',
        data: 'hello from the log pane\n',
      });
    });
    await node.mqtt!.subscribeAsync(topics.logsControl(nodeId), { qos: 0 });
    page.on('dialog', (dialog) => void dialog.accept());
    await node.sendTelemetry([], {
      gpus: [
        {
          index: 0,
          vendor: 'NVIDIA',
          model: 'T4',
          memoryTotalMB: 15360,
          utilizationPercent: 40,
          temperatureC: 61,
        },
      ],
      sensors: [{ id: 'temp1', type: 'temperature', value: 21.5, unit: 'C', ts: Date.now() }],
    });

    // The node in detail: its GPU and sensor figures, and the chart of its history.
    await page.getByRole('button', { name: 'Show node dash-node' }).click();
    const detail = page.locator('#node-detail');
    await expect.poll(() => detail.textContent(), { timeout: 10_000 }).toContain('NVIDIA T4');
    expect(await detail.textContent()).toContain('61 °C');
    expect(await page.locator('#sensors').textContent()).toContain('21.5 C');
    await expect
      .poll(() => page.locator('#node-detail svg.chart polyline[data-series="gpuPercent"]').count())
      .toBe(1);
    expect(await detail.textContent()).toMatch(/GPU 40%/);

    // Cordon and uncordon from the page.
    await detail.getByRole('button', { name: 'Cordon' }).click();
    await expect
      .poll(
        async () => ((await (await cm.api('/api/nodes/dash-node')).json()) as { cordoned: boolean }).cordoned,
      )
      .toBe(true);
    await detail.getByRole('button', { name: 'Uncordon' }).click();
    await expect
      .poll(
        async () => ((await (await cm.api('/api/nodes/dash-node')).json()) as { cordoned: boolean }).cordoned,
      )
      .toBe(false);

    // A job from YAML, then an update of it through Edit, Plan and Apply.
    await page
      .locator('#deploy-spec')
      .fill('name: yaml-job\nimage: edge/busybox:latest\ncommand: [sleep, "3600"]\n');
    await page.locator('#deploy-form button[type=submit]').click();
    await expect.poll(() => page.locator('#deploy-result').textContent()).toContain('Created job yaml-job');
    const row = page.locator('#jobs tr.job', { hasText: 'yaml-job' });
    await row.getByRole('button', { name: 'Edit' }).click();
    expect(await page.locator('#deploy-spec').inputValue()).toMatch(/^name: yaml-job$/m);
    const edited = `${await page.locator('#deploy-spec').inputValue()}`.replace(
      /^env: \{\}$/m,
      'env:\n  MODE: blue',
    );
    await page.locator('#deploy-spec').fill(edited);
    await page.locator('#plan-button').click();
    await expect
      .poll(() => page.locator('#deploy-result').textContent())
      .toContain('yaml-job: version 2 (env)');
    await page.locator('#deploy-form button[type=submit]').click();
    await expect
      .poll(() => page.locator('#deploy-result').textContent())
      .toContain('updated to version 2 (env): rolling out');
    const job = (await (await cm.api('/api/jobs/yaml-job')).json()) as {
      id: string;
      version: number;
      env: object;
    };
    expect([job.version, job.env]).toEqual([2, { MODE: 'blue' }]);
    await expect.poll(() => row.textContent()).toContain('v2');

    // Scale from the row; then the instances, their logs, and a move that cannot work (one node) says why.
    await row.getByLabel('Replicas of yaml-job').fill('2');
    await row.getByRole('button', { name: 'Scale' }).click();
    await expect
      .poll(
        async () => ((await (await cm.api('/api/jobs/yaml-job')).json()) as { replicas: number }).replicas,
      )
      .toBe(2);
    // A job deployed from the page opens its instances at once.
    await expect.poll(() => row.getByRole('button', { name: 'Hide instances of yaml-job' }).count()).toBe(1);
    // The row after the job's own: its instances.
    const instances = row.locator('xpath=following-sibling::tr[1]');
    await instances.getByRole('button', { name: 'Logs' }).first().click();
    await expect
      .poll(() => page.locator('#log-output').textContent(), { timeout: 10_000 })
      .toContain('hello from the log pane');
    expect(await page.locator('#log-title').textContent()).toMatch(/^yaml-job#\d+$/);
    await instances.getByRole('button', { name: 'Move' }).first().click();
    await expect.poll(() => page.locator('#jobs-message').textContent()).toMatch(/cannot move/);

    // Drain from the node's detail: nothing else can take its instances, so it stays draining, and says so.
    await detail.getByRole('button', { name: 'Drain' }).click();
    await expect
      .poll(
        async () => ((await (await cm.api('/api/nodes/dash-node')).json()) as { draining: boolean }).draining,
      )
      .toBe(true);
    await expect.poll(() => detail.textContent()).toContain('draining');

    // Screenshots kept as test artifacts, at desktop and phone widths; the phone layout never scrolls sideways.
    const artifacts = join(process.cwd(), 'test-artifacts');
    mkdirSync(artifacts, { recursive: true });
    for (const [name, width, height] of [
      ['desktop', 1280, 900],
      ['phone', 390, 844],
    ] as const) {
      await page.setViewportSize({ width, height });
      await page.screenshot({ path: join(artifacts, `dashboard-${name}.png`), fullPage: true });
      const scrollWidth = await page.evaluate('document.documentElement.scrollWidth');
      expect(scrollWidth).toBeLessThanOrEqual(width);
    }
    await page.locator('#log-stop').click();
    await expect.poll(() => page.locator('#log-state').textContent()).toBe('stopped');
    await cm.api('/api/nodes/dash-node/uncordon', { method: 'POST' });
  });
});
