// Reading ~/.cache/glance/sidecar.json (written by `glance serve`) to adopt a sidecar another window started.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { SidecarLockFile } from '../../../sidecar/src/protocol';

/** Where `glance serve` writes its lock file: $GLANCE_CACHE_DIR or ~/.cache/glance (as sidecar/src/server/lockfile). */
export function lockFilePath(env: NodeJS.ProcessEnv = process.env, home: string = os.homedir()): string {
  const dir = env.GLANCE_CACHE_DIR || path.join(home, '.cache', 'glance');
  return path.join(dir, 'sidecar.json');
}

export type LockFileVerdict =
  | { kind: 'adopt'; lock: SidecarLockFile; token: string }
  | { kind: 'none'; reason: string };

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else, which we would not adopt anyway
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** What this extension needs of a sidecar it talks to: the protocol it speaks and the version it bundles. */
export interface SidecarExpectation {
  protocolVersion: number;
  /** the bundled sidecar's version (the extension's own); an adopted sidecar must be the same build line */
  version: string;
}

/**
 * Why a sidecar that reports this protocol version and version is not one we can use, or null when it is.
 * (Used on the lock file before connecting and on the initialize result's capabilities after.)
 */
export function incompatibility(found: { protocolVersion?: unknown; version?: unknown }, want: SidecarExpectation): string | null {
  if (found.protocolVersion !== want.protocolVersion) {
    return `it speaks protocol ${String(found.protocolVersion)}, this extension protocol ${want.protocolVersion}`;
  }
  if (found.version !== want.version) return `it is version ${String(found.version)}, this extension bundles ${want.version}`;
  return null;
}

/**
 * Decides whether the sidecar named by the lock file can be adopted: the file parses, the process is alive,
 * it speaks our protocol version and is our version, runs the model we want, and its token file is readable.
 */
export function inspectLockFile(
  file: string,
  wantModel: string,
  want: SidecarExpectation,
  alive: (pid: number) => boolean = isProcessAlive,
): LockFileVerdict {
  let raw: string;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch {
    return { kind: 'none', reason: `no lock file at ${file}` };
  }
  let lock: Partial<SidecarLockFile>;
  try {
    lock = JSON.parse(raw) as Partial<SidecarLockFile>;
  } catch {
    return { kind: 'none', reason: `lock file ${file} is not JSON` };
  }
  if (typeof lock.pid !== 'number' || typeof lock.port !== 'number' || typeof lock.tokenFile !== 'string') {
    return { kind: 'none', reason: `lock file ${file} lacks pid, port or tokenFile` };
  }
  if (!alive(lock.pid)) return { kind: 'none', reason: `sidecar pid ${lock.pid} from ${file} is not running` };
  const incompatible = incompatibility(lock, want);
  if (incompatible !== null) return { kind: 'none', reason: `running sidecar pid ${lock.pid} is incompatible: ${incompatible}` };
  if (typeof lock.model !== 'string' || path.resolve(lock.model) !== path.resolve(wantModel)) {
    return { kind: 'none', reason: `running sidecar serves ${String(lock.model)}, not ${wantModel}` };
  }
  let token: string;
  try {
    token = fs.readFileSync(lock.tokenFile, 'utf8').trim();
  } catch {
    return { kind: 'none', reason: `token file ${lock.tokenFile} is not readable` };
  }
  if (token === '') return { kind: 'none', reason: `token file ${lock.tokenFile} is empty` };
  return { kind: 'adopt', lock: lock as SidecarLockFile, token };
}
