// Small network probes for start-up.sh, in Node because a fresh Debian has no curl. Exit 0 means yes.
//
//   node probe.mjs listening PORT          something accepts TCP connections on 127.0.0.1:PORT
//   node probe.mjs get URL                 one GET (2 s timeout) answers 2xx; prints the body
//   node probe.mjs reachable URL           something answers HTTP(S) at URL at all (its certificate is not
//                                          checked and nothing is sent but the GET: a hint, not trust)
//   node probe.mjs node-online URL [NAME]  GET URL/api/nodes lists an online node (named NAME, if given);
//                                          prints its name
//
// Secrets never come on the command line (any user can read it): the API token is PROBE_TOKEN in the
// environment. An https:// URL is verified with the system CAs plus NODE_EXTRA_CA_CERTS (the cluster CA).

import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';

const TIMEOUT_MS = 2_000;
const TOKEN = process.env.PROBE_TOKEN;

function listening(port) {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: Number(port), timeout: TIMEOUT_MS });
    const done = (result) => {
      socket.destroy();
      resolve(result);
    };
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}

async function get(url) {
  try {
    const headers = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};
    const response = await fetch(url, { headers, signal: AbortSignal.timeout(TIMEOUT_MS) });
    if (!response.ok) return null;
    return await response.text();
  } catch {
    return null;
  }
}

function reachable(url) {
  return new Promise((resolve) => {
    const request = (url.startsWith('https:') ? httpsRequest : httpRequest)(
      url,
      { method: 'GET', timeout: TIMEOUT_MS, rejectUnauthorized: false },
      (response) => {
        response.resume();
        resolve(true);
      },
    );
    request.once('timeout', () => request.destroy());
    request.once('error', () => resolve(false));
    request.end();
  });
}

async function onlineNode(baseUrl, name) {
  const body = await get(`${baseUrl.replace(/\/+$/, '')}/api/nodes`);
  if (body === null) return null;
  try {
    const nodes = JSON.parse(body);
    if (!Array.isArray(nodes)) return null;
    const node = nodes.find((n) => n?.status === 'online' && (!name || n.name === name));
    return node ? String(node.name) : null;
  } catch {
    return null;
  }
}

const [check, ...args] = process.argv.slice(2);
let ok = false;
if (check === 'listening' && args[0]) {
  ok = await listening(args[0]);
} else if (check === 'get' && args[0]) {
  const body = await get(args[0]);
  if (body !== null) process.stdout.write(`${body}\n`);
  ok = body !== null;
} else if (check === 'reachable' && args[0]) {
  ok = await reachable(args[0]);
} else if (check === 'node-online' && args[0]) {
  const nodeName = await onlineNode(args[0], args[1]);
  if (nodeName !== null) process.stdout.write(`${nodeName}\n`);
  ok = nodeName !== null;
} else {
  console.error('usage: probe.mjs listening PORT | get URL | reachable URL | node-online URL [NAME]');
  process.exit(2);
}
process.exit(ok ? 0 : 1);
