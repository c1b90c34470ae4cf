// ~/.cache/glance/sidecar.json: how other editor windows find a running sidecar and share it. Written with mode
// 0600 once the server listens, removed on exit (only if it still names this process).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { SidecarLockFile } from '../protocol/index';

/** ~/.cache/glance, or $GLANCE_CACHE_DIR (tests, several users on one account). */
export function glanceCacheDir(): string {
  return process.env.GLANCE_CACHE_DIR || path.join(os.homedir(), '.cache', 'glance');
}

export function lockFilePath(): string {
  return path.join(glanceCacheDir(), 'sidecar.json');
}

export function writeLockFile(file: string, lock: SidecarLockFile): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(lock, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file); // atomic: a reader never sees half a file
}

export function removeLockFile(file: string, pid: number): void {
  try {
    const lock = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<SidecarLockFile>;
    if (lock.pid === pid) fs.unlinkSync(file);
  } catch {
    // gone or unreadable: nothing of ours to remove
  }
}

/** The lock file of a live sidecar, or null (missing, malformed, or its process is gone). */
export function readLiveLockFile(file: string = lockFilePath()): SidecarLockFile | null {
  try {
    const lock = JSON.parse(fs.readFileSync(file, 'utf8')) as SidecarLockFile;
    if (typeof lock.pid !== 'number' || typeof lock.port !== 'number') return null;
    process.kill(lock.pid, 0);
    return lock;
  } catch {
    return null;
  }
}
