import Module, { createRequire } from 'node:module';
import type Dockerode from 'dockerode';

const require = createRequire(import.meta.url);

/**
 * dockerode loads gRPC (BuildKit sessions) and ssh2 (ssh:// daemons) when it is imported, ~10 MiB of resident
 * memory that a node engine talking to a unix socket never uses. They are put in the module cache as stand-ins
 * that load the real module on first use, so nothing is lost if a future use needs them.
 */
function deferModule(from: NodeJS.Require, name: string): void {
  const path = from.resolve(name);
  if (require.cache[path]) return;
  let real: Record<string | symbol, unknown> | undefined;
  const load = () => {
    if (!real) {
      delete require.cache[path];
      real = from(name) as Record<string | symbol, unknown>;
    }
    return real;
  };
  // ssh2's `Client` is read when docker-modem loads, and only constructed when an ssh:// host is used.
  const lazyClass = (key: string) =>
    new Proxy(function deferred() {}, {
      construct: (_target, args) => new (load()[key] as new (...a: unknown[]) => object)(...args),
    });
  const exports = new Proxy({}, { get: (_target, key) => (key === 'Client' ? lazyClass(key) : load()[key]) });
  const standIn = new Module(path);
  Object.assign(standIn, { filename: path, loaded: true, exports });
  require.cache[path] = standIn;
}

let deferred = false;

/** A dockerode client for the Docker socket, without the eager weight of what it never uses here. */
export async function createDockerClient(socketPath: string): Promise<Dockerode> {
  if (!deferred) {
    deferred = true;
    const fromDockerode = createRequire(require.resolve('dockerode'));
    const fromModem = createRequire(fromDockerode.resolve('docker-modem'));
    deferModule(fromDockerode, '@grpc/grpc-js');
    deferModule(fromDockerode, '@grpc/proto-loader');
    deferModule(fromModem, 'ssh2');
  }
  const { default: DockerClient } = await import('dockerode');
  return new DockerClient({ socketPath });
}
