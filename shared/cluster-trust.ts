import { existsSync, readFileSync } from 'node:fs';
import { get } from 'node:https';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic-file.js';
import { certificateFingerprint, parseJoinToken } from './join-token.js';
import type { Logger } from './logger.js';

/** Where a worker keeps the cluster CA after its first join. */
export const CLUSTER_CA_FILE = 'cluster-ca.pem';
/** The cluster manager's route that hands out its CA to anyone (it is public; the pin is what makes it trusted). */
export const CLUSTER_CA_PATH = '/api/cluster/ca';

/** The cluster manager cannot be trusted as given: a wrong CA, or plain text where a CA is pinned. */
export class TrustError extends Error {
  override name = 'TrustError';
}

export interface TrustOptions {
  /** The cluster manager's URL, `https://` (or `http://` for one started with `--insecure`). */
  url: string;
  joinToken?: string;
  /** Where the CA is stored after the first join (nowhere without one). */
  dataDir?: string;
  /** A CA file given by the operator (`--ca-file`), instead of the join token's pin. */
  caFile?: string;
  logger: Logger;
}

/**
 * The CA (PEM) to verify the cluster manager with; undefined for plain text or for the system's CAs. In order:
 * a CA file given; the CA stored at the first join (unless the token pins another); the CA the cluster manager
 * hands out, taken only when its SHA-256 is the one the join token pins, and then stored. Throws TrustError
 * for a CA that does not match (try again later: it may be someone in between), any other error when the
 * cluster manager cannot be reached.
 */
export async function trustClusterManager(options: TrustOptions): Promise<string | undefined> {
  const pin = options.joinToken ? parseJoinToken(options.joinToken).caFingerprint : undefined;
  const url = new URL(options.url);
  if (url.protocol === 'http:') {
    if (pin)
      throw new TrustError(
        `the join token pins the cluster CA but ${options.url} is plain http: use https:// (http only reaches a cluster manager started with --insecure)`,
      );
    return undefined;
  }
  if (options.caFile) {
    const ca = readFileSync(options.caFile, 'utf8');
    checkPin(ca, pin, `the CA in ${options.caFile}`);
    return ca;
  }
  const storedPath = options.dataDir ? join(options.dataDir, CLUSTER_CA_FILE) : undefined;
  if (storedPath && existsSync(storedPath)) {
    const stored = readFileSync(storedPath, 'utf8');
    if (!pin || certificateFingerprint(stored) === pin) return stored;
    options.logger.warn('the join token pins another cluster CA than the stored one: fetching it again');
  }
  if (!pin) {
    options.logger.info('the join token pins no CA: verifying the cluster manager with the system CAs');
    return undefined;
  }
  const offered = await fetchCa(new URL(CLUSTER_CA_PATH, url));
  checkPin(offered, pin, `the cluster manager at ${url.origin} offers a CA that`);
  if (storedPath) await writeFileAtomic(storedPath, offered, 0o644);
  options.logger.info({ fingerprint: pin }, 'pinned the cluster CA from the join token');
  return offered;
}

function checkPin(ca: string, pin: string | undefined, what: string): void {
  let actual: string;
  try {
    actual = certificateFingerprint(ca);
  } catch {
    throw new TrustError(`${what} is not a PEM certificate`);
  }
  if (pin && actual !== pin)
    throw new TrustError(
      `${what} has SHA-256 ${actual}, but the join token pins ${pin}: refusing it (a different cluster manager, or someone in between)`,
    );
}

const MAX_CA_BYTES = 64 * 1024;

/**
 * GETs the CA without verifying the server: nothing is trusted yet, and the answer is checked against the pin
 * before anything else is sent.
 */
function fetchCa(url: URL): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = get(url, { rejectUnauthorized: false, timeout: 10_000 }, (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        reject(
          new TrustError(
            `GET ${url.pathname} answered ${response.statusCode}: the server offers no cluster CA`,
          ),
        );
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_CA_BYTES) request.destroy(new TrustError(`GET ${url.pathname}: more than 64 KiB`));
        else chunks.push(chunk);
      });
      response.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error(`GET ${url.pathname} timed out`)));
    request.on('error', reject);
  });
}
