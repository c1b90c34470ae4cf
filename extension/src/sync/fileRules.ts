// What the workspace sync sends: .gitignore rules (root and nested), files.exclude globs, no binaries, no huge
// files. Pure (no vscode import) so it can be unit-tested on plain folders.
import { createHash } from 'node:crypto';
import * as path from 'node:path';

import ignore, { type Ignore } from 'ignore';

export function contentHash(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Heuristic used by git: a NUL byte in the first 8000 bytes means binary. */
export function looksBinary(bytes: Uint8Array): boolean {
  const n = Math.min(bytes.length, 8000);
  for (let i = 0; i < n; i++) if (bytes[i] === 0) return true;
  return false;
}

/** Always left out, whatever .gitignore says: VCS internals and dependency folders. */
export const ALWAYS_EXCLUDED_DIRS = ['.git', 'node_modules', '.hg', '.svn', '__pycache__', '.venv', '.tox'];

/**
 * .gitignore rules of one workspace folder. Each .gitignore applies to its own directory and below, with
 * patterns relative to that directory, as git does.
 */
export class IgnoreRules {
  private readonly byDir = new Map<string, Ignore>();

  /** Adds the content of `<dir>/.gitignore`; `dir` is relative to the folder root, '' for the root. */
  addGitignore(dir: string, content: string): void {
    const ig = this.byDir.get(dir) ?? ignore();
    ig.add(content);
    this.byDir.set(dir, ig);
  }

  /** `rel` uses forward slashes, relative to the folder root; directories end with '/'. */
  ignores(rel: string): boolean {
    const parts = rel.split('/').filter((p) => p !== '');
    if (parts.some((p) => ALWAYS_EXCLUDED_DIRS.includes(p) && (rel.endsWith('/') || parts.indexOf(p) < parts.length - 1))) {
      return true;
    }
    for (const [dir, ig] of this.byDir) {
      const prefix = dir === '' ? '' : `${dir}/`;
      if (!rel.startsWith(prefix)) continue;
      const sub = rel.slice(prefix.length);
      if (sub === '' || sub === '/') continue;
      if (ig.ignores(sub)) return true;
    }
    return false;
  }
}

/** Converts VS Code's files.exclude map ({glob: true}) into the glob list for findFiles' exclude argument. */
export function excludeGlob(filesExclude: Record<string, unknown>): string | null {
  const globs = Object.entries(filesExclude)
    .filter(([, v]) => v === true)
    .map(([k]) => k);
  globs.push(...ALWAYS_EXCLUDED_DIRS.map((d) => `**/${d}/**`));
  return globs.length === 0 ? null : `{${globs.join(',')}}`;
}

/** Splits items into batches bounded by count and total bytes (a single item over the byte bound goes alone). */
export function batchBySize<T>(items: readonly T[], size: (item: T) => number, maxCount: number, maxBytes: number): T[][] {
  const batches: T[][] = [];
  let current: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const s = size(item);
    if (current.length > 0 && (current.length >= maxCount || bytes + s > maxBytes)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(item);
    bytes += s;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/** Relative path with forward slashes, or null when `file` is not inside `root`. */
export function relativeInside(root: string, file: string): string | null {
  const rel = path.relative(root, file);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return null;
  return rel.split(path.sep).join('/');
}
