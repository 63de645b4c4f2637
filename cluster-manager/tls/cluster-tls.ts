import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { certificateFingerprint, type Logger } from '../../shared/index.js';
import { createCertificateAuthority, issueServerCertificate, type KeyPair } from './certificates.js';

/** What the cluster manager serves HTTPS, WSS and MQTTS with. */
export interface ClusterTls {
  /** The server certificate (PEM, chain allowed) and its key. */
  cert: string;
  key: string;
  /** The CA clients verify the server with, PEM; absent for a given certificate from a public CA. */
  ca?: string;
  /** SHA-256 of the CA's DER, hex: what join tokens pin. */
  caFingerprint?: string;
}

export interface ClusterTlsOptions {
  dataDir: string;
  /** Extra names and addresses for the server certificate (`--tls-san`). */
  extraNames: string[];
  /** The address the cluster manager listens on (a name clients may use when it is not a wildcard). */
  host: string;
  /** `--tls-cert` / `--tls-key` / `--tls-ca`: a certificate of the operator's instead of the cluster CA's. */
  certFile?: string;
  keyFile?: string;
  caFile?: string;
}

/** A server certificate this close to its end is replaced at start. */
const RENEW_BEFORE_MS = 90 * 24 * 60 * 60 * 1000;

/**
 * The cluster's TLS material. By default a cluster CA made at first start (`<data-dir>/tls/ca.pem`, its key
 * 0600) and a server certificate it signs for every address and name of this machine plus `--tls-san`. The
 * server certificate is issued again at start when a name is missing or it nears its end; the CA stays, so
 * join tokens that pin it keep working.
 */
export function loadClusterTls(options: ClusterTlsOptions, logger: Logger): ClusterTls {
  if (options.certFile || options.keyFile) return givenCertificate(options);
  const dir = join(options.dataDir, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = loadOrCreateCa(dir, logger);
  const names = serverNames(options);
  let server = readPair(dir, 'server') ?? { cert: '', key: '' };
  if (!stillGood(server, ca, names)) {
    server = issueServerCertificate(ca, names);
    writePair(dir, 'server', server);
    logger.info({ names }, 'issued a server certificate from the cluster CA');
  }
  return { ...server, ca: ca.cert, caFingerprint: certificateFingerprint(ca.cert) };
}

function givenCertificate(options: ClusterTlsOptions): ClusterTls {
  if (!options.certFile || !options.keyFile)
    throw new Error('--tls-cert and --tls-key go together: give both, or neither for the cluster CA');
  const cert = readFileSync(options.certFile, 'utf8');
  const key = readFileSync(options.keyFile, 'utf8');
  if (!options.caFile) return { cert, key };
  const ca = readFileSync(options.caFile, 'utf8');
  return { cert, key, ca, caFingerprint: certificateFingerprint(ca) };
}

function loadOrCreateCa(dir: string, logger: Logger): KeyPair {
  const stored = readPair(dir, 'ca');
  if (stored) return stored;
  const ca = createCertificateAuthority(`edge cluster CA ${hostname()}`);
  writePair(dir, 'ca', ca);
  logger.info({ fingerprint: certificateFingerprint(ca.cert) }, 'created the cluster CA');
  return ca;
}

/** localhost, this host's name, every address of its interfaces (no link-local ones), the listen address. */
function serverNames(options: ClusterTlsOptions): string[] {
  const names = new Set(['localhost', hostname()]);
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === 'IPv6' && (address.scopeid || address.address.startsWith('fe80'))) continue;
      names.add(address.address);
    }
  }
  if (options.host && options.host !== '0.0.0.0' && options.host !== '::') names.add(options.host);
  for (const name of options.extraNames) names.add(name);
  return [...names];
}

/** Signed by this CA, with its own key (a crash may have replaced one file), covering every name, not near its end. */
function stillGood(server: KeyPair, ca: KeyPair, names: string[]): boolean {
  try {
    const cert = new X509Certificate(server.cert);
    if (!cert.verify(new X509Certificate(ca.cert).publicKey)) return false;
    if (!cert.checkPrivateKey(createPrivateKey(server.key))) return false;
    if (Date.parse(cert.validTo) - Date.now() < RENEW_BEFORE_MS) return false;
    return names.every((name) => (isIP(name) ? cert.checkIP(name) : cert.checkHost(name)) !== undefined);
  } catch {
    return false;
  }
}

function readPair(dir: string, name: string): KeyPair | undefined {
  const certPath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}-key.pem`);
  if (!existsSync(certPath) || !existsSync(keyPath)) return undefined;
  return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
}

/** The key first and private (0600), both through a rename: a crash leaves the old pair or the new one. */
function writePair(dir: string, name: string, pair: KeyPair): void {
  for (const [file, content, mode] of [
    [`${name}-key.pem`, pair.key, 0o600],
    [`${name}.pem`, pair.cert, 0o644],
  ] as const) {
    const path = join(dir, file);
    writeFileSync(`${path}.tmp`, content, { mode });
    renameSync(`${path}.tmp`, path);
  }
}
