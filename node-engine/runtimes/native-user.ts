import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';

/** Who native workloads run as, and the tool that drops to that user after the limits are joined. */
export interface RunAs {
  name: string;
  uid: number;
  gid: number;
  /** util-linux's setpriv: exec'd last, as root, it becomes the user and execs the workload. */
  setpriv: string;
}

/**
 * `--native-user` resolved: undefined when workloads run as this process (it is not root, so they are not
 * either; or it is told `root`). Throws with what to do when the user or setpriv is missing: a node engine
 * never runs workloads as root by mistake.
 */
export async function resolveRunAs(
  user: string,
  isRoot = process.getuid?.() === 0,
): Promise<RunAs | undefined> {
  if (!isRoot || user === 'root') return undefined;
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '');
  const entry = passwd
    .split('\n')
    .map((line) => line.split(':'))
    .find((fields) => fields[0] === user || (/^\d+$/.test(user) && fields[2] === user));
  if (!entry) throw new Error(`--native-user: no user "${user}" in /etc/passwd (or pass --native-user root)`);
  for (const setpriv of ['/usr/bin/setpriv', '/bin/setpriv']) {
    try {
      await access(setpriv, constants.X_OK);
      return { name: entry[0]!, uid: Number(entry[2]), gid: Number(entry[3]), setpriv };
    } catch {}
  }
  throw new Error(
    '--native-user: setpriv (util-linux) is not installed: native jobs cannot drop root (install util-linux, or pass --native-user root)',
  );
}

/** The command that runs `workload` as `runAs`, without any group of root's. */
export function asUser(runAs: RunAs | undefined, workload: string[]): string[] {
  if (!runAs) return workload;
  return [runAs.setpriv, `--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, '--clear-groups', '--', ...workload];
}
