import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  X509Certificate,
} from 'node:crypto';
import { isIP } from 'node:net';
import {
  bitString,
  boolean,
  explicit,
  implicit,
  objectIdentifier,
  octetString,
  readElement,
  sequence,
  set,
  smallInteger,
  time,
  unsignedInteger,
  utf8String,
} from './der.js';

/** A certificate and its private key, both PEM. */
export interface KeyPair {
  cert: string;
  key: string;
}

const OID = {
  ecPublicKey: '1.2.840.10045.2.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extendedKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

const DAY_MS = 24 * 60 * 60 * 1000;
/** How long the cluster CA is valid: it is pinned in every join token, so it outlives servers and tokens. */
export const CA_VALIDITY_DAYS = 3650;
/** How long a server certificate is valid; the cluster manager issues a new one well before that. */
export const SERVER_VALIDITY_DAYS = 365;
/** Devices without a real-time clock boot a little behind: certificates start an hour in the past. */
const BACKDATE_MS = 60 * 60 * 1000;

/** A new cluster CA: a P-256 key and a self-signed certificate that may sign server certificates only. */
export function createCertificateAuthority(commonName: string, now = new Date()): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const name = distinguishedName(commonName);
  const keyId = keyIdentifier(publicKey);
  const cert = signCertificate({
    issuer: name,
    subject: name,
    publicKey,
    signer: privateKey,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + CA_VALIDITY_DAYS * DAY_MS),
    extensions: [
      extension(OID.basicConstraints, true, sequence(boolean(true), smallInteger(0))),
      // digitalSignature, keyCertSign, cRLSign: bits 0, 5 and 6 (the last bit of the byte is padding).
      extension(OID.keyUsage, true, bitString(Buffer.from([0x86]), 1)),
      extension(OID.subjectKeyIdentifier, false, octetString(keyId)),
    ],
  });
  return { cert, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

/**
 * A server certificate signed by `ca` for these DNS names and IP addresses (subject alternative names; the
 * common name is only a label, clients check the SANs).
 */
export function issueServerCertificate(ca: KeyPair, names: string[], now = new Date()): KeyPair {
  if (names.length === 0) throw new Error('a server certificate needs at least one name or address');
  const caCert = new X509Certificate(ca.cert);
  const caKey = createPrivateKey(ca.key);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const alternativeNames = sequence(...names.map(generalName));
  const cert = signCertificate({
    issuer: issuerName(caCert),
    subject: distinguishedName(names[0]!),
    publicKey,
    signer: caKey,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + SERVER_VALIDITY_DAYS * DAY_MS),
    extensions: [
      extension(OID.basicConstraints, true, sequence()),
      // digitalSignature only: ECDHE key exchange signs, it never encrypts with this key.
      extension(OID.keyUsage, true, bitString(Buffer.from([0x80]), 7)),
      extension(OID.extendedKeyUsage, false, sequence(objectIdentifier(OID.serverAuth))),
      extension(OID.subjectAltName, false, alternativeNames),
      extension(OID.subjectKeyIdentifier, false, octetString(keyIdentifier(publicKey))),
      extension(OID.authorityKeyIdentifier, false, sequence(implicit(0, keyIdentifier(caCert.publicKey)))),
    ],
  });
  return { cert, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

interface CertificateFields {
  issuer: Buffer;
  subject: Buffer;
  publicKey: KeyObject;
  signer: KeyObject;
  notBefore: Date;
  notAfter: Date;
  extensions: Buffer[];
}

function signCertificate(fields: CertificateFields): string {
  const algorithm = sequence(objectIdentifier(OID.ecdsaWithSha256));
  // A positive serial of 127 random bits: unique without a counter to keep.
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const tbs = sequence(
    explicit(0, smallInteger(2)), // version 3
    unsignedInteger(serial),
    algorithm,
    fields.issuer,
    sequence(time(fields.notBefore), time(fields.notAfter)),
    fields.subject,
    fields.publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, sequence(...fields.extensions)),
  );
  const signature = sign('sha256', tbs, fields.signer); // DER (r, s): what X.509 expects for ECDSA
  const der = sequence(tbs, algorithm, bitString(signature));
  const base64 = der.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${base64}${base64.endsWith('\n') ? '' : '\n'}-----END CERTIFICATE-----\n`;
}

function distinguishedName(commonName: string): Buffer {
  return sequence(
    set(sequence(objectIdentifier(OID.organization), utf8String('edge-orchestrator'))),
    set(sequence(objectIdentifier(OID.commonName), utf8String(commonName))),
  );
}

/** The issuer of a certificate signed by `ca` is, byte for byte, the CA's own subject. */
function issuerName(ca: X509Certificate): Buffer {
  return readSubject(ca.raw);
}

function extension(oid: string, critical: boolean, value: Buffer): Buffer {
  return critical
    ? sequence(objectIdentifier(oid), boolean(true), octetString(value))
    : sequence(objectIdentifier(oid), octetString(value));
}

function generalName(name: string): Buffer {
  const family = isIP(name);
  if (family === 4) return implicit(7, Buffer.from(name.split('.').map(Number)));
  if (family === 6) return implicit(7, ipv6Bytes(name));
  return implicit(2, Buffer.from(name, 'ascii'));
}

function ipv6Bytes(address: string): Buffer {
  const [head = '', tail = ''] = address.split('::');
  const groups = (text: string) => (text ? text.split(':') : []);
  const left = groups(head);
  const right = address.includes('::') ? groups(tail) : [];
  const all = [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  const bytes = Buffer.alloc(16);
  for (const [index, group] of all.entries()) bytes.writeUInt16BE(Number.parseInt(group, 16), index * 2);
  return bytes;
}

/** SHA-1 of the public key's DER (RFC 5280 4.2.1.2, method 1 near enough): names a key in the chain. */
function keyIdentifier(publicKey: KeyObject): Buffer {
  return createHash('sha1')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest();
}

/** The subject Name of a DER certificate as encoded: the sixth field of its TBSCertificate. */
function readSubject(der: Buffer): Buffer {
  const tbs = readElement(der, readElement(der, 0).contentStart);
  let offset = tbs.contentStart;
  for (let field = 0; field < 5; field++) offset = readElement(der, offset).end; // version .. validity
  return der.subarray(offset, readElement(der, offset).end);
}
