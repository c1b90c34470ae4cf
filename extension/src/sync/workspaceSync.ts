// Sends every workspace folder's files (multi-root) to the sidecar by content hash, in small batches read
// asynchronously, with progress and cancellation; then follows changes incrementally. The sidecar asks for the
// text only of files whose hash it does not know (`missing`), so a window adopting a running sidecar sends
// little. Open documents' unsaved edits travel separately through LSP's didChange.
import * as vscode from 'vscode';

import {
  type WorkspaceFileEntry,
  WorkspaceFilesMethod,
  type WorkspaceFilesParams,
  type WorkspaceFilesResult,
} from '../../../sidecar/src/protocol';
import { nextRequestId } from '../log';
import type { SidecarSupervisor } from '../supervisor/supervisor';
import { IgnoreRules, batchBySize, contentHash, excludeGlob, looksBinary, relativeInside } from './fileRules';

const BATCH_FILES = 64;
const BATCH_BYTES = 2 * 1024 * 1024;
/** files whose bytes are read concurrently */
const READ_CONCURRENCY = 8;
/** quiet time before a burst of file-system events is sent */
const CHANGE_DEBOUNCE_MS = 300;

interface Prepared {
  uri: string;
  hash: string;
  text: string;
}

export class WorkspaceSync implements vscode.Disposable {
  private readonly disposables: vscode.Disposable[] = [];
  private readonly watchers = new Map<string, vscode.FileSystemWatcher>();
  private readonly rules = new Map<string, IgnoreRules>();
  /** uri → hash of what the sidecar holds */
  private readonly sent = new Map<string, string>();
  private scan: vscode.CancellationTokenSource | null = null;
  private pendingChanged = new Set<string>();
  private pendingRemoved = new Set<string>();
  private changeTimer: NodeJS.Timeout | null = null;
  private skippedCount = 0;

  constructor(
    private readonly supervisor: SidecarSupervisor,
    private readonly log: vscode.LogOutputChannel,
    private readonly maxFileBytes: () => number,
  ) {
    this.disposables.push(
      vscode.workspace.onDidChangeWorkspaceFolders((e) => {
        for (const f of e.removed) this.removeFolder(f);
        if (e.added.length > 0) this.fullScan('workspace folders added');
      }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration('files.exclude') || e.affectsConfiguration('glance.context')) this.fullScan('settings changed');
      }),
    );
  }

  /** Starts (or restarts) a full scan of all folders: after every (re)connect, since the sidecar may be new. */
  fullScan(why: string): void {
    this.scan?.cancel();
    const source = new vscode.CancellationTokenSource();
    this.scan = source;
    void vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: 'Glance: syncing workspace', cancellable: true },
      async (progress, progressToken) => {
        progressToken.onCancellationRequested(() => source.cancel());
        try {
          await this.runScan(why, source.token, progress);
        } catch (e) {
          if (!source.token.isCancellationRequested) this.log.warn(`workspace sync failed: ${(e as Error).message}`);
        }
      },
    );
    this.ensureWatchers();
  }

  private async runScan(
    why: string,
    token: vscode.CancellationToken,
    progress: vscode.Progress<{ message?: string; increment?: number }>,
  ): Promise<void> {
    const started = Date.now();
    const scanId = nextRequestId('scan');
    const folders = vscode.workspace.workspaceFolders ?? [];
    const filesExclude = vscode.workspace.getConfiguration('files').get<Record<string, unknown>>('exclude', {});
    const exclude = excludeGlob(filesExclude);
    this.skippedCount = 0;
    const candidates: vscode.Uri[] = [];
    for (const folder of folders) {
      const rules = await this.loadRules(folder, exclude, token);
      this.rules.set(folder.uri.toString(), rules);
      const found = await vscode.workspace.findFiles(new vscode.RelativePattern(folder, '**/*'), exclude, undefined, token);
      for (const uri of found) {
        const rel = relativeInside(folder.uri.fsPath, uri.fsPath);
        if (rel !== null && !rules.ignores(rel)) candidates.push(uri);
      }
    }
    if (token.isCancellationRequested) return;
    this.log.info(`[${scanId}] workspace sync (${why}): ${candidates.length} files in ${folders.length} folder(s)`);

    let done = 0;
    let sentBytes = 0;
    const stats: number[] = [];
    for (let i = 0; i < candidates.length; i += 256) {
      if (token.isCancellationRequested) return;
      const chunk = candidates.slice(i, i + 256);
      stats.push(...(await Promise.all(chunk.map((u) => Promise.resolve(vscode.workspace.fs.stat(u)).then((s) => s.size, () => -1)))));
    }
    const sized = candidates.map((uri, i) => ({ uri, size: stats[i] ?? -1 })).filter((f) => {
      if (f.size < 0) return false;
      if (f.size > this.maxFileBytes()) {
        this.skippedCount++;
        return false;
      }
      return true;
    });
    const batches = batchBySize(sized, (f) => f.size, BATCH_FILES, BATCH_BYTES);
    for (const [b, batch] of batches.entries()) {
      if (token.isCancellationRequested) return;
      const prepared = await this.prepare(batch.map((f) => f.uri), token);
      sentBytes += await this.send(prepared, [], b === batches.length - 1 ? { scanComplete: true, scanId } : { scanId });
      done += batch.length;
      progress.report({ message: `${done}/${sized.length} files`, increment: (100 * batch.length) / Math.max(1, sized.length) });
      // Yield to the extension host between batches so typing stays smooth.
      await new Promise((r) => setImmediate(r));
    }
    if (batches.length === 0) await this.send([], [], { scanComplete: true, scanId });
    this.log.info(
      `[${scanId}] workspace sync done: ${done} files, ${this.skippedCount} skipped (binary or over ${Math.round(this.maxFileBytes() / 1024)} KiB), ${Math.round(sentBytes / 1024)} KiB of text sent, ${Date.now() - started} ms`,
    );
  }

  private async loadRules(folder: vscode.WorkspaceFolder, exclude: string | null, token: vscode.CancellationToken): Promise<IgnoreRules> {
    const rules = new IgnoreRules();
    const gitignores = await vscode.workspace.findFiles(new vscode.RelativePattern(folder, '**/.gitignore'), exclude, 200, token);
    for (const uri of gitignores) {
      const rel = relativeInside(folder.uri.fsPath, uri.fsPath);
      if (rel === null) continue;
      const dir = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
      try {
        rules.addGitignore(dir, new TextDecoder().decode(await vscode.workspace.fs.readFile(uri)));
      } catch {
        // unreadable .gitignore: no rules from it
      }
    }
    return rules;
  }

  /** Reads files (a few at a time), dropping binaries; the text is what an open document shows if open. */
  private async prepare(uris: vscode.Uri[], token: vscode.CancellationToken): Promise<Prepared[]> {
    const out: Prepared[] = [];
    for (let i = 0; i < uris.length; i += READ_CONCURRENCY) {
      if (token.isCancellationRequested) break;
      const slice = uris.slice(i, i + READ_CONCURRENCY);
      const read = await Promise.all(
        slice.map(async (uri) => {
          try {
            return { uri, bytes: await vscode.workspace.fs.readFile(uri) };
          } catch {
            return null;
          }
        }),
      );
      for (const r of read) {
        if (r === null) continue;
        if (looksBinary(r.bytes)) {
          this.skippedCount++;
          continue;
        }
        out.push({ uri: r.uri.toString(), hash: contentHash(r.bytes), text: new TextDecoder().decode(r.bytes) });
      }
    }
    return out;
  }

  /** Sends hashes first and texts only for what the sidecar lacks; returns the bytes of text sent. */
  private async send(files: Prepared[], removed: string[], extra: Pick<WorkspaceFilesParams, 'scanComplete' | 'scanId'>): Promise<number> {
    const client = this.supervisor.client;
    if (client === null) return 0;
    const params: WorkspaceFilesParams = {
      files: files.map((f) => ({ uri: f.uri, hash: f.hash })),
      ...(removed.length > 0 ? { removed } : {}),
      ...extra,
    };
    const result = await client.sendRequest<WorkspaceFilesResult>(WorkspaceFilesMethod, params);
    let bytes = 0;
    if (result.missing.length > 0) {
      const missing = new Set(result.missing);
      const entries: WorkspaceFileEntry[] = files.filter((f) => missing.has(f.uri)).map((f) => ({ uri: f.uri, hash: f.hash, text: f.text }));
      for (const e of entries) bytes += e.text?.length ?? 0;
      // scanComplete is not repeated: the first request already named every file of the batch.
      const second = await client.sendRequest<WorkspaceFilesResult>(WorkspaceFilesMethod, { files: entries, scanId: extra.scanId });
      if (second.missing.length > 0) this.log.warn(`sidecar still lacks ${second.missing.length} files after sending their text`);
      this.skippedCount += second.skipped.length;
    }
    this.skippedCount += result.skipped.length;
    for (const f of files) this.sent.set(f.uri, f.hash);
    for (const r of removed) this.sent.delete(r);
    return bytes;
  }

  private ensureWatchers(): void {
    for (const folder of vscode.workspace.workspaceFolders ?? []) {
      const key = folder.uri.toString();
      if (this.watchers.has(key)) continue;
      const watcher = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(folder, '**/*'));
      watcher.onDidCreate((u) => this.queue(u, false));
      watcher.onDidChange((u) => this.queue(u, false));
      watcher.onDidDelete((u) => this.queue(u, true));
      this.watchers.set(key, watcher);
    }
  }

  private removeFolder(folder: vscode.WorkspaceFolder): void {
    const key = folder.uri.toString();
    this.watchers.get(key)?.dispose();
    this.watchers.delete(key);
    this.rules.delete(key);
    const prefix = key.endsWith('/') ? key : `${key}/`;
    for (const uri of this.sent.keys()) if (uri.startsWith(prefix)) this.pendingRemoved.add(uri);
    this.schedule();
  }

  private queue(uri: vscode.Uri, deleted: boolean): void {
    const folder = vscode.workspace.getWorkspaceFolder(uri);
    if (!folder) return;
    const rel = relativeInside(folder.uri.fsPath, uri.fsPath);
    if (rel === null || rel.split('/').pop() === '.gitignore') {
      if (rel !== null) this.fullScan('.gitignore changed');
      return;
    }
    if (this.rules.get(folder.uri.toString())?.ignores(rel)) return;
    const key = uri.toString();
    if (deleted) {
      this.pendingChanged.delete(key);
      if (this.sent.has(key)) this.pendingRemoved.add(key);
    } else {
      this.pendingRemoved.delete(key);
      this.pendingChanged.add(key);
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.changeTimer) clearTimeout(this.changeTimer);
    this.changeTimer = setTimeout(() => void this.flush(), CHANGE_DEBOUNCE_MS);
  }

  private async flush(): Promise<void> {
    const changed = [...this.pendingChanged];
    const removed = [...this.pendingRemoved];
    this.pendingChanged.clear();
    this.pendingRemoved.clear();
    if (changed.length === 0 && removed.length === 0) return;
    const token = new vscode.CancellationTokenSource().token;
    const uris: vscode.Uri[] = [];
    for (const c of changed) {
      const uri = vscode.Uri.parse(c);
      try {
        const stat = await vscode.workspace.fs.stat(uri);
        if (stat.type & vscode.FileType.Directory) continue;
        if (stat.size > this.maxFileBytes()) {
          if (this.sent.has(c)) removed.push(c);
          continue;
        }
        uris.push(uri);
      } catch {
        if (this.sent.has(c)) removed.push(c);
      }
    }
    const prepared = (await this.prepare(uris, token)).filter((p) => this.sent.get(p.uri) !== p.hash);
    if (prepared.length === 0 && removed.length === 0) return;
    try {
      await this.send(prepared, removed, {});
      this.log.info(`workspace sync: ${prepared.length} changed, ${removed.length} removed`);
    } catch (e) {
      this.log.warn(`workspace sync of changes failed: ${(e as Error).message}`);
    }
  }

  dispose(): void {
    this.scan?.cancel();
    if (this.changeTimer) clearTimeout(this.changeTimer);
    for (const w of this.watchers.values()) w.dispose();
    for (const d of this.disposables) d.dispose();
  }
}
