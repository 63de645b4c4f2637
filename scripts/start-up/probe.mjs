// Small network probes for start-up.sh, in Node because a fresh Debian has no curl. Exit 0 means yes.
//
//   node probe.mjs listening PORT          something accepts TCP connections on 127.0.0.1:PORT
//   node probe.mjs get URL [TOKEN]         one GET (2 s timeout) answers 2xx; prints the body
//   node probe.mjs node-online URL TOKEN [NAME]
//                                          GET URL/api/nodes lists an online node (named NAME, if given);
//                                          prints its name
import { connect } from 'node:net';

const TIMEOUT_MS = 2_000;

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

async function get(url, token) {
  try {
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const response = await fetch(url, { headers, signal: AbortSignal.timeout(TIMEOUT_MS) });
    if (!response.ok) return null;
    return await response.text();
  } catch {
    return null;
  }
}

async function onlineNode(baseUrl, token, name) {
  const body = await get(`${baseUrl.replace(/\/+$/, '')}/api/nodes`, token);
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
  const body = await get(args[0], args[1]);
  if (body !== null) process.stdout.write(`${body}\n`);
  ok = body !== null;
} else if (check === 'node-online' && args[0] && args[1]) {
  const nodeName = await onlineNode(args[0], args[1], args[2]);
  if (nodeName !== null) process.stdout.write(`${nodeName}\n`);
  ok = nodeName !== null;
} else {
  console.error('usage: probe.mjs listening PORT | get URL [TOKEN] | node-online URL TOKEN [NAME]');
  process.exit(2);
}
process.exit(ok ? 0 : 1);
