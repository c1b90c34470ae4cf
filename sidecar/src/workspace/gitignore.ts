// .gitignore rules over the files a client sent. The extension already leaves ignored files out of its scan; the
// sidecar applies the same rules itself so that any client (another editor, a script) gets the same repository
// view. Nested .gitignore files apply to their own folder's subtree, as git does. Matching: the `ignore` package
// (git's pattern semantics, negations included).

import ignore, { type Ignore } from 'ignore';

export interface GitignoreFile {
  /** path of the .gitignore as the model sees paths (folder-relative, '/'-separated) */
  path: string;
  text: string;
}

export class GitignoreRules {
  private readonly rules: { dir: string; ig: Ignore }[];

  constructor(files: readonly GitignoreFile[]) {
    this.rules = files
      .map((f) => ({ dir: f.path.includes('/') ? f.path.slice(0, f.path.lastIndexOf('/') + 1) : '', ig: ignore().add(f.text) }))
      .sort((a, b) => a.dir.length - b.dir.length);
  }

  /** Whether `path` (same convention as GitignoreFile.path) is ignored by a .gitignore above it. */
  ignores(path: string): boolean {
    for (const r of this.rules) {
      if (!path.startsWith(r.dir)) continue;
      const rel = path.slice(r.dir.length);
      if (rel !== '' && r.ig.ignores(rel)) return true;
    }
    return false;
  }
}
