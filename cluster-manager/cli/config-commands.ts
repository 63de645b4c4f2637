import { resolve } from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../../shared/index.js';
import {
  CONTEXT_NAME,
  ConfigFileError,
  type EdgectlConfig,
  type EdgectlContext,
  type LoadedConfig,
  loadConfig,
  saveConfig,
} from './config-file.js';
import type { ConnectionFlags } from './connection.js';
import { formatTable } from './format.js';
import type { EdgectlIo } from './program.js';

/** `edgectl config ...`: the contexts of the config file (kubectl's `config` commands, the same names). */
export function addConfigCommands(program: Command, io: EdgectlIo): void {
  const print = (text: string) => io.stdout(`${text}\n`);
  const load = (): LoadedConfig => {
    const loaded = loadConfig(io.env);
    if (loaded.warning) io.stderr(`edgectl: warning: ${loaded.warning}\n`);
    return loaded;
  };
  const save = async (loaded: LoadedConfig, config: EdgectlConfig): Promise<string> => {
    if (!loaded.path)
      throw new UsageError('no place for the config file: set EDGECTL_CONFIG, XDG_CONFIG_HOME or HOME');
    await saveConfig(loaded.path, config);
    return loaded.path;
  };
  const existing = (loaded: LoadedConfig, name: string): EdgectlContext => {
    const context = loaded.config.contexts[name];
    if (!context) throw new ConfigFileError(`no context "${name}" in ${loaded.path ?? 'the config file'}`);
    return context;
  };

  const config = program
    .command('config')
    .description(
      'contexts: a cluster manager with its CA and token, kept in ~/.config/edgectl/config.json (EDGECTL_CONFIG)',
    );

  config
    .command('set-context')
    .description(
      'make or change a context with the global --server, --ca-file and --token (or --token-file); an empty ' +
        'value removes a field',
    )
    .argument('<name>', 'a name for it (letters, digits, . _ -)')
    .option('--token-file <path>', 'a file holding the API token (read at every command)')
    .action(async (name: string, options: { tokenFile?: string }) => {
      if (!CONTEXT_NAME.test(name))
        throw new UsageError(`set-context: "${name}" is not a context name (letters, digits, . _ -)`);
      const { server, caFile, token } = program.opts<ConnectionFlags>();
      const loaded = load();
      const before = loaded.config.contexts[name];
      if (!before && !server) throw new UsageError(`set-context: the new context ${name} needs --server`);
      const context: EdgectlContext = { ...before, server: server ?? before!.server };
      if (caFile !== undefined) setPath(context, 'caFile', caFile);
      if (token !== undefined) {
        setField(context, 'token', token);
        delete context.tokenFile;
      }
      if (options.tokenFile !== undefined) {
        setPath(context, 'tokenFile', options.tokenFile);
        delete context.token;
      }
      const path = await save(loaded, {
        ...loaded.config,
        contexts: { ...loaded.config.contexts, [name]: context },
      });
      print(`context ${name} ${before ? 'changed' : 'made'} in ${path}`);
    });

  config
    .command('use-context')
    .description('use this context from now on')
    .argument('<name>', 'the context')
    .action(async (name: string) => {
      const loaded = load();
      existing(loaded, name);
      await save(loaded, { ...loaded.config, currentContext: name });
      print(`using context ${name}`);
    });

  config
    .command('get-contexts')
    .description('every context: name, server, CA file, where its token is (never the token)')
    .action(() => {
      const { config: file } = load();
      const rows = Object.entries(file.contexts).map(([name, context]) => [
        name === file.currentContext ? '*' : '',
        name,
        context.server,
        context.caFile ?? '(system CAs)',
        context.tokenFile ?? (context.token ? '(in the config file)' : '(none)'),
      ]);
      print(formatTable(['CURRENT', 'NAME', 'SERVER', 'CA-FILE', 'TOKEN'], rows));
    });

  config
    .command('current-context')
    .description('the name of the context in use')
    .action(() => {
      const loaded = load();
      if (!loaded.config.currentContext)
        throw new ConfigFileError(`no current context in ${loaded.path ?? 'the config file'}`);
      print(loaded.config.currentContext);
    });

  config
    .command('delete-context')
    .description('remove a context (if it was the current one, none is current then)')
    .argument('<name>', 'the context')
    .action(async (name: string) => {
      const loaded = load();
      existing(loaded, name);
      const { [name]: _removed, ...contexts } = loaded.config.contexts;
      const next: EdgectlConfig = { ...loaded.config, contexts };
      if (next.currentContext === name) delete next.currentContext;
      const path = await save(loaded, next);
      print(`deleted context ${name} from ${path}`);
    });
}

/** A path as given relative to the working directory, kept absolute (the config file is read from anywhere). */
function setPath(context: EdgectlContext, field: 'caFile' | 'tokenFile', value: string): void {
  setField(context, field, value === '' ? '' : resolve(value));
}

function setField(context: EdgectlContext, field: 'caFile' | 'token' | 'tokenFile', value: string): void {
  if (value === '') delete context[field];
  else context[field] = value;
}
