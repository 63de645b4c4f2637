import { type EdgectlIo, runEdgectl } from '../../cluster-manager/cli/program.js';

/** edgectl run in this process with this environment (and stdin, and clock); its exit code and what it printed. */
export async function runEdgectlHere(
  argv: string[],
  options: {
    env: NodeJS.ProcessEnv;
    stdin?: string;
    now?: () => number;
    signal?: AbortSignal;
    /** Hears everything printed on stdout as it is printed (for what follows, like `events -f`). */
    onStdout?: (text: string) => void;
    /** Hears everything printed on stderr as it is printed. */
    onStderr?: (text: string) => void;
  },
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: EdgectlIo = {
    stdout: (text) => {
      stdout += text;
      options.onStdout?.(text);
    },
    stderr: (text) => {
      stderr += text;
      options.onStderr?.(text);
    },
    env: options.env,
    readStdin: async () => options.stdin ?? '',
    now: options.now ?? Date.now,
    ...(options.signal ? { signal: options.signal } : {}),
  };
  const code = await runEdgectl(argv, io);
  return { code, stdout, stderr };
}

/**
 * edgectl against a test cluster manager, as an operator on its machine runs it: its URL, the default admin
 * token and the cluster CA from the environment.
 */
export function edgectlFor(cm: { url: string; apiToken: string; dataDir: string }) {
  const env = { EDGE_SERVER: cm.url, EDGE_API_TOKEN: cm.apiToken, EDGE_CA_FILE: `${cm.dataDir}/tls/ca.pem` };
  return (argv: string[]) => runEdgectlHere(argv, { env });
}
