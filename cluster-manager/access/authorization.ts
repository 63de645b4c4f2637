import type { TokenRole } from '../store/index.js';

/**
 * What each role may do on the HTTP API, the one place that says it. `admin`: everything (tokens and node
 * removal included). `deployer`: reads everything and changes jobs (`/api/jobs...`) only. `read-only`: reads
 * (jobs, nodes, events, metrics), never tokens. `join`: nothing here; it registers nodes.
 */
export function allows(role: TokenRole, method: string, path: string): boolean {
  if (role === 'admin') return true;
  if (role === 'join') return false;
  if (path === '/api/tokens' || path.startsWith('/api/tokens/')) return false;
  const reading = method === 'GET' || method === 'HEAD';
  if (role === 'read-only') return reading;
  return reading || path === '/api/jobs' || path.startsWith('/api/jobs/');
}
