import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
});
