// What the sidecar knows of one workspace (a set of folders): the repository's files as the extension sent them
// (by content hash, texts stored once per hash), the open documents' live text on top, which document the user
// works in, and when each file was last edited. Everything the prompt layout needs, nothing about the model.

import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { skipReason } from './filters';
import { GitignoreRules } from './gitignore';

export interface WorkspaceFolder {
  uri: string;
  name: string;
  /** absolute file system path */
  fsPath: string;
}

export interface FileView {
  uri: string;
  /** path shown to the model: relative to its folder, prefixed by the folder's name in multi-root workspaces */
  path: string;
  text: string;
  hash: string;
  /** ms timestamp of the last edit seen in this session; 0 = never edited (stable) */
  lastEdited: number;
}

export class OutsideWorkspaceError extends Error {}

export function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** The file system path of a file:// URI, or null when it is not one. */
export function uriToPath(uri: string): string | null {
  if (!uri.startsWith('file:')) return null;
  try {
    return path.resolve(fileURLToPath(uri));
  } catch {
    return null;
  }
}

export function pathToUri(p: string): string {
  return pathToFileURL(p).href;
}

interface Overlay {
  text: string;
  hash: string;
}

export class Workspace {
  private folders: WorkspaceFolder[] = [];
  /** uri → content hash of the repository file as last sent */
  private readonly files = new Map<string, string>();
  /** content hash → text (shared by identical files) */
  private readonly texts = new Map<string, string>();
  /** uri → live text of an open document */
  private readonly overlays = new Map<string, Overlay>();
  private readonly edited = new Map<string, number>();
  private readonly skipped = new Map<string, string>();
  /** bumps whenever anything the repository layout depends on changes */
  version = 0;
  /** the document the user works in (its text goes after the repository prefix, not inside it) */
  activeUri: string | null = null;

  constructor(readonly name: string) {}

  setFolders(folders: { uri: string; name?: string }[]): void {
    const out: WorkspaceFolder[] = [];
    for (const f of folders) {
      const p = uriToPath(f.uri);
      if (p === null) throw new OutsideWorkspaceError(`workspace folder ${f.uri} is not a file:// URI`);
      out.push({ uri: f.uri, name: f.name || path.basename(p), fsPath: p });
    }
    this.folders = out;
    // Files no longer under any folder leave the repository.
    for (const uri of [...this.files.keys()]) if (!this.contains(uri)) this.removeFile(uri);
    this.version++;
  }

  getFolders(): readonly WorkspaceFolder[] {
    return this.folders;
  }

  /** The folder holding `uri`, or null. Paths are normalised first, so `..` segments cannot escape a folder. */
  folderOf(uri: string): WorkspaceFolder | null {
    const p = uriToPath(uri);
    if (p === null) return null;
    for (const f of this.folders) {
      const rel = path.relative(f.fsPath, p);
      if (rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel))) return f;
    }
    return null;
  }

  contains(uri: string): boolean {
    return this.folderOf(uri) !== null;
  }

  /** Throws OutsideWorkspaceError unless `uri` is inside a workspace folder. */
  check(uri: string): void {
    if (!this.contains(uri)) {
      const p = uriToPath(uri);
      throw new OutsideWorkspaceError(
        p === null ? `${uri} is not a file:// URI` : `${p} is outside the workspace folders (${this.folders.map((f) => f.fsPath).join(', ') || 'none'})`,
      );
    }
  }

  displayPath(uri: string): string {
    const f = this.folderOf(uri);
    const p = uriToPath(uri) ?? uri;
    if (!f) return p;
    const rel = path.relative(f.fsPath, p).split(path.sep).join('/');
    return this.folders.length > 1 ? `${f.name}/${rel}` : rel;
  }

  /** Records a repository file by hash. Returns false when the text is needed (hash unknown, no text given). */
  putFile(uri: string, hash: string, text: string | undefined): { accepted: boolean; skipped?: string } {
    this.check(uri);
    if (text !== undefined) {
      if (sha256(text) !== hash) throw new Error(`the hash of ${uri} does not match its text (expected sha256 of the UTF-8 bytes)`);
      const why = skipReason(this.displayPath(uri), text);
      if (why) {
        this.removeFile(uri);
        this.skipped.set(uri, why);
        return { accepted: true, skipped: why };
      }
      this.texts.set(hash, text);
    } else if (!this.texts.has(hash)) {
      return { accepted: false };
    }
    this.skipped.delete(uri);
    const old = this.files.get(uri);
    if (old !== hash) {
      this.files.set(uri, hash);
      if (old !== undefined) this.edited.set(uri, Date.now());
      this.version++;
      this.collect(old);
    }
    return { accepted: true };
  }

  removeFile(uri: string): void {
    const old = this.files.get(uri);
    if (old === undefined) return;
    this.files.delete(uri);
    this.edited.delete(uri);
    this.collect(old);
    this.version++;
  }

  /** Keeps only the listed files (the end of a full scan). */
  retainOnly(uris: Set<string>): void {
    for (const uri of [...this.files.keys()]) if (!uris.has(uri)) this.removeFile(uri);
  }

  openDocument(uri: string, text: string): void {
    this.overlays.set(uri, { text, hash: sha256(text) });
    this.version++;
  }

  changeDocument(uri: string, text: string): void {
    this.overlays.set(uri, { text, hash: sha256(text) });
    this.edited.set(uri, Date.now());
    this.setActive(uri);
    this.version++;
  }

  closeDocument(uri: string): void {
    if (this.overlays.delete(uri)) this.version++;
  }

  /** The current text of a document: the open buffer if any, else the repository file. */
  textOf(uri: string): string | null {
    const o = this.overlays.get(uri);
    if (o) return o.text;
    const h = this.files.get(uri);
    return h === undefined ? null : (this.texts.get(h) ?? null);
  }

  hashOf(uri: string): string | null {
    const o = this.overlays.get(uri);
    if (o) return o.hash;
    return this.files.get(uri) ?? null;
  }

  setActive(uri: string): void {
    if (this.activeUri !== uri) {
      // The document the user leaves goes to the tail of the layout (most recent), where a later switch back
      // invalidates the least of the cached prefix.
      if (this.activeUri !== null) this.edited.set(this.activeUri, Date.now());
      this.activeUri = uri;
      this.version++;
    }
  }

  /** Every repository file (open buffers' text where open), except skipped ones and those .gitignore excludes. */
  listFiles(): FileView[] {
    const all = this.listAll();
    const gitignores = all.filter((f) => f.path === '.gitignore' || f.path.endsWith('/.gitignore'));
    if (gitignores.length === 0) return all;
    const rules = new GitignoreRules(gitignores);
    return all.filter((f) => !rules.ignores(f.path));
  }

  private listAll(): FileView[] {
    const out: FileView[] = [];
    const seen = new Set<string>();
    for (const [uri, hash] of this.files) {
      const o = this.overlays.get(uri);
      const text = o ? o.text : this.texts.get(hash);
      if (text === undefined) continue;
      out.push({ uri, path: this.displayPath(uri), text, hash: o ? o.hash : hash, lastEdited: this.edited.get(uri) ?? 0 });
      seen.add(uri);
    }
    // Open documents the scan has not sent (new, unsaved files) belong to the repository too.
    for (const [uri, o] of this.overlays) {
      if (seen.has(uri) || !this.contains(uri) || this.skipped.has(uri)) continue;
      if (skipReason(this.displayPath(uri), o.text)) continue;
      out.push({ uri, path: this.displayPath(uri), text: o.text, hash: o.hash, lastEdited: this.edited.get(uri) ?? 0 });
    }
    return out;
  }

  counts(): { known: number; skipped: number } {
    return { known: this.files.size, skipped: this.skipped.size };
  }

  private collect(hash: string | undefined): void {
    if (hash === undefined) return;
    for (const h of this.files.values()) if (h === hash) return;
    this.texts.delete(hash);
  }
}
