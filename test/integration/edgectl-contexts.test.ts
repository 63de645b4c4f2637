import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { runEdgectlHere } from '../helpers/edgectl.js';

/** edgectl's config file with named contexts instead of a token per command (issue 14, item 8). */
describe('edgectl contexts', () => {
  let cm: RunningClusterManager;
  let dir: string;
  let caFile: string;
  let tokenFile: string;
  let wrongTokenFile: string;
  let configFile: string;
  /** Nothing but the config file: no EDGE_* variables, no HOME. */
  let env: NodeJS.ProcessEnv;
  const edgectl = (argv: string[], extra: NodeJS.ProcessEnv = {}) =>
    runEdgectlHere(argv, { env: { ...env, ...extra } });
  /** The config file as edgectl wrote it. */
  const written = () => JSON.parse(readFileSync(configFile, 'utf8'));

  beforeAll(async () => {
    cm = await startClusterManager();
    await cm.api('/api/jobs', { method: 'POST', json: { name: 'ctx-web', image: 'edge/busybox:latest' } });
    dir = mkdtempSync(join(tmpdir(), 'edgectl-contexts-'));
    caFile = join(cm.dataDir, 'tls', 'ca.pem');
    tokenFile = join(cm.dataDir, 'api-token');
    wrongTokenFile = join(dir, 'wrong-token');
    writeFileSync(wrongTokenFile, 'not-the-token\n', { mode: 0o600 });
    configFile = join(dir, 'config', 'edgectl.json');
    env = { EDGECTL_CONFIG: configFile };
  });

  afterAll(async () => {
    await cm?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('makes, lists, uses and deletes contexts; a command then needs no token, server or CA', async () => {
    expect(await edgectl(['config', 'current-context'])).toMatchObject({
      code: 1,
      stderr: `edgectl: no current context in ${configFile}\n`,
    });
    const made = await edgectl([
      'config',
      'set-context',
      'site-a',
      '--server',
      cm.url,
      '--ca-file',
      caFile,
      '--token-file',
      tokenFile,
    ]);
    expect(made).toEqual({ code: 0, stdout: `context site-a made in ${configFile}\n`, stderr: '' });
    // Secrets (or where they are) for its owner only: the file 0600, the folder made for it 0700.
    expect(statSync(configFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'config')).mode & 0o777).toBe(0o700);
    expect(written()).toEqual({ contexts: { 'site-a': { server: cm.url, caFile, tokenFile } } });
    expect((await edgectl(['config', 'current-context'])).code).toBe(1); // made, not used yet (as kubectl)
    expect(await edgectl(['config', 'use-context', 'site-a'])).toMatchObject({
      code: 0,
      stdout: 'using context site-a\n',
    });
    const jobs = await edgectl(['jobs']);
    expect(jobs).toMatchObject({ code: 0, stderr: '' });
    expect(jobs.stdout).toContain('ctx-web');
    expect((await edgectl(['config', 'current-context'])).stdout).toBe('site-a\n');

    // A second context with its token in the file; changing one field keeps the others.
    await edgectl(['config', 'set-context', 'site-b', '--server', 'http://127.0.0.1:1', '--token', 'inline']);
    await edgectl(['config', 'set-context', 'site-b', '--ca-file', caFile]);
    expect(written().contexts['site-b']).toEqual({ server: 'http://127.0.0.1:1', caFile, token: 'inline' });
    const listed = await edgectl(['config', 'get-contexts']);
    expect(listed.stdout.split('\n')).toEqual([
      expect.stringMatching(/^CURRENT\s+NAME\s+SERVER\s+CA-FILE\s+TOKEN$/),
      expect.stringMatching(new RegExp(`^\\*\\s+site-a\\s+${cm.url}\\s+${caFile}\\s+${tokenFile}$`)),
      expect.stringMatching(/^\s+site-b\s+http:\/\/127\.0\.0\.1:1\s+\S+\s+\(in the config file\)$/),
      '',
    ]);
    expect(listed.stdout).not.toContain('inline');

    // --context picks another for one command; an unknown one is named with those there are.
    const other = await edgectl(['--context', 'site-b', 'jobs']);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('cannot reach the cluster manager at http://127.0.0.1:1');
    expect(await edgectl(['--context', 'nope', 'jobs'])).toMatchObject({
      code: 2,
      stderr: `edgectl: no context "nope" in ${configFile} (there are: site-a, site-b)\n`,
    });

    expect(await edgectl(['config', 'delete-context', 'site-a'])).toMatchObject({
      code: 0,
      stdout: `deleted context site-a from ${configFile}\n`,
    });
    expect(written()).toEqual({ contexts: { 'site-b': expect.any(Object) } });
    expect((await edgectl(['config', 'current-context'])).code).toBe(1);
    expect(await edgectl(['config', 'delete-context', 'site-a'])).toMatchObject({
      code: 1,
      stderr: `edgectl: no context "site-a" in ${configFile}\n`,
    });
    expect(await edgectl(['config', 'set-context', 'new'])).toMatchObject({
      code: 2,
      stderr: 'edgectl: set-context: the new context new needs --server\n',
    });
    expect((await edgectl(['config', 'set-context', 'a b', '--server', cm.url])).code).toBe(2);
    rmSync(configFile);
  });

  it('takes a flag over its env var, and the env var over the context', async () => {
    await edgectl(['config', 'set-context', 'wrong', '--server', 'http://127.0.0.1:1']);
    await edgectl(['config', 'set-context', 'wrong', '--ca-file', caFile, '--token-file', wrongTokenFile]);
    await edgectl(['config', 'use-context', 'wrong']);
    const token = cm.apiToken;
    // The context alone: its server does not answer.
    expect((await edgectl(['jobs'])).stderr).toContain(
      'cannot reach the cluster manager at http://127.0.0.1:1',
    );
    // The server from the env: reached, with the context's (wrong) token and its CA.
    const withEnvServer = await edgectl(['jobs'], { EDGE_SERVER: cm.url });
    expect(withEnvServer.code).toBe(1);
    expect(withEnvServer.stderr).toMatch(/^error: .* \(HTTP 401\)\n/);
    // The token from the env over the context's; a flag over both.
    expect((await edgectl(['jobs'], { EDGE_SERVER: cm.url, EDGE_API_TOKEN: token })).code).toBe(0);
    expect(
      (await edgectl(['--token', token, 'jobs'], { EDGE_SERVER: cm.url, EDGE_API_TOKEN: 'x' })).code,
    ).toBe(0);
    expect(
      (
        await edgectl(['--server', cm.url, 'jobs'], {
          EDGE_SERVER: 'http://127.0.0.1:1',
          EDGE_API_TOKEN: token,
        })
      ).code,
    ).toBe(0);
    // The CA: EDGE_CA_FILE over the context's (which is not there), a flag over EDGE_CA_FILE (not there either).
    const missing = join(dir, 'missing-ca.pem');
    await edgectl(['config', 'set-context', 'wrong', '--ca-file', missing]);
    const both = { EDGE_SERVER: cm.url, EDGE_API_TOKEN: token };
    expect((await edgectl(['jobs'], both)).stderr).toBe(
      `edgectl: cannot read the CA file ${missing} of context wrong: ENOENT\n`,
    );
    expect((await edgectl(['jobs'], { ...both, EDGE_CA_FILE: caFile })).code).toBe(0);
    expect((await edgectl(['--ca-file', caFile, 'jobs'], { ...both, EDGE_CA_FILE: missing })).code).toBe(0);
    await edgectl(['config', 'set-context', 'wrong', '--ca-file', caFile]);
    // A context in use stands in for the local defaults: without a token of its own none is sent.
    await edgectl(['config', 'set-context', 'wrong', '--token-file', '']);
    expect(written().contexts.wrong).toEqual({ server: 'http://127.0.0.1:1', caFile });
    const noToken = await edgectl(['jobs'], { EDGE_SERVER: cm.url });
    expect(noToken.stderr).toMatch(/^error: .* \(HTTP 401\)\nhint: .*config set-context/);
    rmSync(configFile);
  });

  it('finds the file under XDG_CONFIG_HOME, else HOME, unless EDGECTL_CONFIG says where', async () => {
    const home = join(dir, 'home');
    const xdg = join(dir, 'xdg');
    const set = ['config', 'set-context', 'here', '--server', cm.url];
    expect((await runEdgectlHere(set, { env: { HOME: home } })).stdout).toBe(
      `context here made in ${join(home, '.config', 'edgectl', 'config.json')}\n`,
    );
    expect((await runEdgectlHere(set, { env: { HOME: home, XDG_CONFIG_HOME: xdg } })).stdout).toBe(
      `context here made in ${join(xdg, 'edgectl', 'config.json')}\n`,
    );
    expect(
      (await runEdgectlHere(set, { env: { HOME: home, XDG_CONFIG_HOME: xdg, EDGECTL_CONFIG: configFile } }))
        .stdout,
    ).toBe(`context here made in ${configFile}\n`);
    expect(await runEdgectlHere(set, { env: {} })).toMatchObject({
      code: 2,
      stderr: 'edgectl: no place for the config file: set EDGECTL_CONFIG, XDG_CONFIG_HOME or HOME\n',
    });
    rmSync(configFile);
  });

  it('names the file and what is wrong in it, and changes nothing', async () => {
    const cases: [string, string][] = [
      ['{', 'is not JSON'],
      ['[]', ': its top level: Invalid input: expected object, received array'],
      ['{"contexts":{"a":{"server":"http://x","tokenfile":"t"}}}', ': contexts.a: unknown field "tokenfile"'],
      ['{"contexts":{"a":{}}}', ': contexts.a.server: missing'],
      ['{"contexts":{"a":{"server":"ftp://x"}}}', ': contexts.a.server: must be an http(s) URL'],
      ['{"contexts":{"a b":{"server":"http://x"}}}', ': contexts: "a b" is not a context name'],
      [
        '{"contexts":{"a":{"server":"http://x","token":"t","tokenFile":"/t"}}}',
        ': contexts.a: both token and tokenFile: keep one',
      ],
      ['{"currentContext":"gone","contexts":{}}', ': its currentContext "gone" is not among its contexts'],
      [
        `{"currentContext":"a","contexts":{"a":{"server":"${cm.url}","tokenFile":"${dir}/none"}}}`,
        `cannot read the token file ${dir}/none of context a: ENOENT`,
      ],
      [
        `{"currentContext":"a","contexts":{"a":{"server":"${cm.url}","caFile":"${dir}/none"}}}`,
        `cannot read the CA file ${dir}/none of context a: ENOENT`,
      ],
    ];
    for (const [content, problem] of cases) {
      writeFileSync(configFile, content, { mode: 0o600 });
      const result = await edgectl(['jobs']);
      expect(result.code, content).toBe(1);
      expect(result.stderr, content).toMatch(/^edgectl: [^\n]+\n$/);
      expect(result.stderr, content).toContain(problem);
      if (problem.startsWith('cannot read')) continue;
      expect(result.stderr).toContain(`the config file ${configFile}`);
      // Not overwritten by a command that would write it.
      expect((await edgectl(['config', 'use-context', 'a'])).code, content).not.toBe(0);
      expect(readFileSync(configFile, 'utf8')).toBe(content);
    }
    rmSync(configFile);
  });

  it('refuses a file others may change, or read with a token in it; warns when others may only read it', async () => {
    await edgectl(['config', 'set-context', 'site', '--server', cm.url, '--ca-file', caFile]);
    await edgectl(['config', 'set-context', 'site', '--token-file', tokenFile]);
    await edgectl(['config', 'use-context', 'site']);
    chmodSync(configFile, 0o644);
    const readable = await edgectl(['jobs']);
    expect(readable.code).toBe(0);
    expect(readable.stderr).toBe(
      `edgectl: warning: the config file ${configFile} may be read by others (mode 644): chmod 600 ${configFile}\n`,
    );
    chmodSync(configFile, 0o664);
    expect(await edgectl(['jobs'])).toMatchObject({
      code: 1,
      stderr: `edgectl: the config file ${configFile} may be changed by others (mode 664): chmod 600 ${configFile}\n`,
    });
    chmodSync(configFile, 0o600);
    await edgectl(['config', 'set-context', 'site', '--token', cm.apiToken]);
    expect(written().contexts.site.tokenFile).toBeUndefined();
    expect((await edgectl(['jobs'])).code).toBe(0);
    chmodSync(configFile, 0o640);
    const refused = await edgectl(['jobs']);
    expect(refused).toMatchObject({ code: 1, stdout: '' });
    expect(refused.stderr).toBe(
      `edgectl: the config file ${configFile} holds the token of context site and others may read it (mode 640): chmod 600 ${configFile}\n`,
    );
    rmSync(configFile);
  });
});
