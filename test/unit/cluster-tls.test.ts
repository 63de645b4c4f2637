import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createCertificateAuthority,
  issueServerCertificate,
} from '../../cluster-manager/tls/certificates.js';
import { loadClusterTls } from '../../cluster-manager/tls/cluster-tls.js';
import {
  certificateFingerprint,
  describeConnectError,
  formatJoinToken,
  parseJoinToken,
  trustedFetch,
} from '../../shared/index.js';

const logger = pino({ level: 'silent' });
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});
function newDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'edge-tls-'));
  dirs.push(dir);
  return dir;
}

describe('cluster CA and server certificates', () => {
  const ca = createCertificateAuthority('test CA');

  it('makes a CA that may sign server certificates only, valid for ten years from an hour ago', () => {
    const cert = new X509Certificate(ca.cert);
    expect(cert.ca).toBe(true);
    expect(cert.checkIssued(cert)).toBe(true);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails).toMatchObject({ namedCurve: 'prime256v1' });
    const years = (Date.parse(cert.validTo) - Date.now()) / (365 * 24 * 3600 * 1000);
    expect(years).toBeGreaterThan(9.9);
    expect(Date.parse(cert.validFrom)).toBeLessThan(Date.now() - 50 * 60 * 1000);
    expect(certificateFingerprint(ca.cert)).toBe(createHash('sha256').update(cert.raw).digest('hex'));
  });

  it('issues a server certificate for names and IPv4/IPv6 addresses, signed by the CA', () => {
    const server = issueServerCertificate(ca, ['localhost', '127.0.0.1', '::1', '2001:db8::7', 'cm.example']);
    const cert = new X509Certificate(server.cert);
    expect(cert.ca).toBe(false);
    expect(cert.verify(new X509Certificate(ca.cert).publicKey)).toBe(true);
    expect(cert.checkIssued(new X509Certificate(ca.cert))).toBe(true);
    expect(cert.checkHost('cm.example')).toBe('cm.example');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkIP('2001:db8::7')).toBe('2001:db8::7');
    expect(cert.checkIP('10.0.0.1')).toBeUndefined();
  });

  it('serves HTTPS that a client pinning the CA accepts, and one pinning another CA refuses', async () => {
    const server = issueServerCertificate(ca, ['127.0.0.1']);
    const https = createServer(server, (_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => https.listen(0, '127.0.0.1', resolve));
    const url = `https://127.0.0.1:${(https.address() as AddressInfo).port}/`;
    try {
      expect(await (await trustedFetch(ca.cert)(url)).text()).toBe('ok');
      const other = createCertificateAuthority('other CA');
      const refused = await trustedFetch(other.cert)(url).catch((error: Error) => error);
      expect(describeConnectError(refused)).toMatch(/not from the cluster CA this node trusts/);
    } finally {
      https.close();
    }
  });
});

describe('loadClusterTls', () => {
  it('makes the CA once (key 0600 in a 0700 dir), and keeps it and the server certificate across starts', () => {
    const dataDir = newDir();
    const first = loadClusterTls({ dataDir, extraNames: [], host: '0.0.0.0' }, logger);
    expect(statSync(join(dataDir, 'tls')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dataDir, 'tls', 'ca-key.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dataDir, 'tls', 'server-key.pem')).mode & 0o777).toBe(0o600);
    const server = new X509Certificate(first.cert);
    expect(server.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(server.checkHost('localhost')).toBe('localhost');
    const again = loadClusterTls({ dataDir, extraNames: [], host: '0.0.0.0' }, logger);
    expect(again).toEqual(first);
  });

  it('issues a new server certificate from the same CA for a new --tls-san, or when its key does not match', () => {
    const dataDir = newDir();
    const first = loadClusterTls({ dataDir, extraNames: [], host: '0.0.0.0' }, logger);
    const named = loadClusterTls(
      { dataDir, extraNames: ['edge.example', '198.51.100.7'], host: '0.0.0.0' },
      logger,
    );
    expect(named.caFingerprint).toBe(first.caFingerprint);
    expect(named.cert).not.toBe(first.cert);
    expect(new X509Certificate(named.cert).checkHost('edge.example')).toBe('edge.example');
    expect(new X509Certificate(named.cert).checkIP('198.51.100.7')).toBe('198.51.100.7');
    // A crash between the two renames left a key of another certificate: a new pair, not a server that fails.
    writeFileSync(join(dataDir, 'tls', 'server-key.pem'), createCertificateAuthority('x').key);
    const repaired = loadClusterTls({ dataDir, extraNames: [], host: '0.0.0.0' }, logger);
    expect(new X509Certificate(repaired.cert).checkPrivateKey(createPrivateKey(repaired.key))).toBe(true);
  });

  it('issues a new server certificate when the one on disk has fewer than 90 days left', () => {
    const dataDir = newDir();
    const first = loadClusterTls({ dataDir, extraNames: [], host: '0.0.0.0' }, logger);
    const ca = {
      cert: readFileSync(join(dataDir, 'tls', 'ca.pem'), 'utf8'),
      key: readFileSync(join(dataDir, 'tls', 'ca-key.pem'), 'utf8'),
    };
    const names = new X509Certificate(first.cert)
      .subjectAltName!.split(', ')
      .map((entry) => entry.replace(/^(DNS|IP Address):/, '').replace(/^0:0:0:0:0:0:0:1$/, '::1'));
    // Issued 300 days ago: 65 days left.
    const ageing = issueServerCertificate(ca, names, new Date(Date.now() - 300 * 24 * 3600 * 1000));
    writeFileSync(join(dataDir, 'tls', 'server.pem'), ageing.cert);
    writeFileSync(join(dataDir, 'tls', 'server-key.pem'), ageing.key);
    const renewed = loadClusterTls({ dataDir, extraNames: [], host: '0.0.0.0' }, logger);
    expect(renewed.cert).not.toBe(ageing.cert);
    expect(Date.parse(new X509Certificate(renewed.cert).validTo)).toBeGreaterThan(
      Date.now() + 300 * 24 * 3600 * 1000,
    );
    expect(renewed.caFingerprint).toBe(first.caFingerprint);
  });

  it('uses a given certificate, and pins the CA given with it', () => {
    const dir = newDir();
    const ca = createCertificateAuthority('operator CA');
    const server = issueServerCertificate(ca, ['cm.example']);
    for (const [file, content] of [
      ['cert.pem', server.cert],
      ['key.pem', server.key],
      ['ca.pem', ca.cert],
    ] as const)
      writeFileSync(join(dir, file), content);
    const given = { certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem') };
    expect(loadClusterTls({ dataDir: dir, extraNames: [], host: '', ...given }, logger)).toEqual({
      cert: server.cert,
      key: server.key,
    });
    const pinned = loadClusterTls(
      { dataDir: dir, extraNames: [], host: '', ...given, caFile: join(dir, 'ca.pem') },
      logger,
    );
    expect(pinned.caFingerprint).toBe(certificateFingerprint(readFileSync(join(dir, 'ca.pem'), 'utf8')));
  });
});

describe('join tokens', () => {
  it('carry the CA fingerprint and the secret; a bare secret is a token without a pin', () => {
    const fingerprint = 'ab'.repeat(32);
    const token = formatJoinToken({ secret: 's3cr:et', caFingerprint: fingerprint });
    expect(token).toBe(`E10${fingerprint}::s3cr:et`);
    expect(parseJoinToken(token)).toEqual({ secret: 's3cr:et', caFingerprint: fingerprint });
    expect(parseJoinToken(`E10${fingerprint.toUpperCase()}::x`).caFingerprint).toBe(fingerprint);
    expect(parseJoinToken(' plain-secret\n')).toEqual({ secret: 'plain-secret' });
    expect(parseJoinToken('E10abc::short')).toEqual({ secret: 'E10abc::short' });
  });
});
