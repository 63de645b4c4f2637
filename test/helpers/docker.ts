import { execFileSync, spawn } from 'node:child_process';

export interface ContainerSummary {
  id: string;
  name: string;
  state: string;
  image: string;
  labels: Record<string, string>;
}

/** Containers with a label, as `docker ps -a` sees them: the ground truth for tests. */
export function containersWithLabel(label: string): ContainerSummary[] {
  const out = execFileSync(
    'docker',
    ['ps', '-a', '--no-trunc', '--filter', `label=${label}`, '--format', '{{json .}}'],
    {
      encoding: 'utf8',
    },
  );
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const row = JSON.parse(line) as {
        ID: string;
        Names: string;
        State: string;
        Image: string;
        Labels: string;
      };
      const labels = Object.fromEntries(
        row.Labels.split(',')
          .filter(Boolean)
          .map((pair) => {
            const at = pair.indexOf('=');
            return [pair.slice(0, at), pair.slice(at + 1)];
          }),
      );
      return { id: row.ID, name: row.Names, state: row.State, image: row.Image, labels };
    });
}

export function inspectContainer(id: string): {
  HostConfig: { NanoCpus: number; Memory: number; PidsLimit: number };
  State: { Running: boolean; Pid: number; StartedAt: string };
  Config: { Labels: Record<string, string> };
  RestartCount: number;
} {
  return JSON.parse(execFileSync('docker', ['inspect', id], { encoding: 'utf8' }))[0];
}

/** Removes every container carrying the label (test cleanup). */
export function removeContainersWithLabel(label: string): void {
  const ids = containersWithLabel(label).map((c) => c.id);
  if (ids.length > 0) execFileSync('docker', ['rm', '-f', ...ids], { stdio: 'ignore' });
}

/** Runs a command in a container; resolves to its output, or undefined when it fails. */
export function execIn(containerId: string, command: string[], timeoutMs = 8000): string | undefined {
  try {
    return execFileSync('docker', ['exec', containerId, ...command], {
      encoding: 'utf8',
      timeout: timeoutMs,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (error) {
    if (process.env.E2E_DEBUG) console.log(command.join(' '), (error as { stderr?: string }).stderr);
    return undefined;
  }
}

/** An HTTP GET with nc from inside a container (the static busybox's wget crashes resolving non-loopback names). */
export function fetchIn(containerId: string, ip: string): string | undefined {
  return execIn(containerId, ['sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${ip} 80`]);
}

/** One ping from inside a container; whether it was answered. */
export function pingIn(containerId: string, ip: string): boolean {
  return execIn(containerId, ['ping', '-c', '1', '-W', '2', ip]) !== undefined;
}

/** A ping left running in a container (one ICMP flow): the sequence numbers answered so far, as they come. */
export interface RunningPing {
  readonly replies: number[];
  /** Ends it (inside the container too). */
  stop(): void;
}

/** `ping -i <interval>` from inside the container until `stop()` (or `seconds`). */
export function startPingIn(containerId: string, ip: string, interval = 0.2, seconds = 170): RunningPing {
  const child = spawn(
    'docker',
    ['exec', containerId, 'ping', '-i', String(interval), '-w', String(seconds), ip],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  const replies: number[] = [];
  let rest = '';
  child.stdout.on('data', (chunk: Buffer) => {
    const lines = (rest + chunk.toString()).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      const match = /seq=(\d+)/.exec(line);
      if (match) replies.push(Number(match[1]));
    }
  });
  return {
    replies,
    stop() {
      execIn(containerId, ['busybox', 'killall', 'ping']);
      child.kill();
    },
  };
}
