import { existsSync, readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import { resolveDataDir, UsageError } from '../../shared/index.js';
import { ConfigFileError, type EdgectlContext, type LoadedConfig } from './config-file.js';

export const DEFAULT_SERVER = 'https://127.0.0.1:10100';
/** Where the cluster manager keeps its generated API token, under the project directory. */
export const DEFAULT_TOKEN_FILE = 'var/cluster-manager/api-token';
/** Where the cluster manager keeps its cluster CA, under the project directory. */
export const DEFAULT_CA_FILE = 'var/cluster-manager/tls/ca.pem';

/** The global flags that say which cluster manager to talk to and how. */
export interface ConnectionFlags {
  server?: string;
  token?: string;
  caFile?: string;
  context?: string;
}

/** Which cluster manager, with which token, verified with which CA (undefined: the system CAs). */
export interface Connection {
  server: string;
  token: string | undefined;
  ca: string | undefined;
}

/**
 * Each of server, token and CA from the first place that has it: a flag, then its env var (EDGE_SERVER,
 * EDGE_API_TOKEN, EDGE_CA_FILE), then the context in use (--context, EDGE_CONTEXT, else the config file's
 * current one), then the all-in-one install's files next to the project. A context in use takes the place of
 * those files: its server never gets the local token.
 */
export function resolveConnection(
  flags: ConnectionFlags,
  env: NodeJS.ProcessEnv,
  loaded: LoadedConfig,
): Connection {
  const context = contextInUse(flags, env, loaded);
  const server = flags.server ?? serverFromEnv(env.EDGE_SERVER) ?? context?.server ?? DEFAULT_SERVER;
  const token = flags.token || env.EDGE_API_TOKEN || contextToken(context) || localToken(context);
  return { server, token, ca: readCa(flags.caFile || env.EDGE_CA_FILE, context) };
}

/** The context named by --context or EDGE_CONTEXT, else the current one; undefined when there is none. */
function contextInUse(
  flags: ConnectionFlags,
  env: NodeJS.ProcessEnv,
  loaded: LoadedConfig,
): (EdgectlContext & { name: string }) | undefined {
  const { contexts, currentContext } = loaded.config;
  const asked = flags.context || env.EDGE_CONTEXT;
  if (asked) {
    const context = contexts[asked];
    if (!context) {
      const known = Object.keys(contexts);
      throw new UsageError(
        `no context "${asked}" in ${loaded.path ?? 'the config file (none: no HOME)'}${known.length > 0 ? ` (there are: ${known.join(', ')})` : ''}`,
      );
    }
    return { ...context, name: asked };
  }
  if (!currentContext) return undefined;
  const current = contexts[currentContext];
  if (!current)
    throw new ConfigFileError(
      `the config file ${loaded.path}: its currentContext "${currentContext}" is not among its contexts`,
    );
  return { ...current, name: currentContext };
}

function contextToken(context: (EdgectlContext & { name: string }) | undefined): string | undefined {
  if (!context) return undefined;
  if (context.token) return context.token;
  if (!context.tokenFile) return undefined;
  let token: string;
  try {
    token = readFileSync(context.tokenFile, 'utf8').trim();
  } catch (error) {
    throw new ConfigFileError(
      `cannot read the token file ${context.tokenFile} of context ${context.name}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  if (!token)
    throw new ConfigFileError(`the token file ${context.tokenFile} of context ${context.name} is empty`);
  return token;
}

/** The all-in-one install keeps the token next to the project; an operator there needs no flag. */
function localToken(context: EdgectlContext | undefined): string | undefined {
  if (context) return undefined;
  const path = resolveDataDir(DEFAULT_TOKEN_FILE);
  if (!existsSync(path)) return undefined;
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The CA named by flag or env, else the context's (it must be readable), else the local install's, if there. */
function readCa(
  named: string | undefined,
  context: (EdgectlContext & { name: string }) | undefined,
): string | undefined {
  const path = named || context?.caFile;
  if (path) {
    try {
      return readFileSync(path, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      if (!named)
        throw new ConfigFileError(`cannot read the CA file ${path} of context ${context!.name}: ${code}`);
      throw new UsageError(`cannot read the CA file ${path}: ${code}`);
    }
  }
  if (context) return undefined;
  const local = resolveDataDir(DEFAULT_CA_FILE);
  return existsSync(local) ? readFileSync(local, 'utf8') : undefined;
}

function serverFromEnv(value: string | undefined): string | undefined {
  if (!value) return undefined;
  try {
    return parseServerUrl(value);
  } catch (error) {
    throw new UsageError(`EDGE_SERVER: ${(error as Error).message}`);
  }
}

export function parseServerUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(`not a URL: ${value}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(`not an http(s) URL: ${value}`);
  }
  return value;
}
