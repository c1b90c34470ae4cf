// The repository context of every workspace the sidecar serves: one Workspace per distinct set of folders
// (several editor windows on the same folders share one), its layout computed when asked and cached by the
// workspace's version, and the engine's background target kept equal to the layout of the workspace used last,
// so the repository prefix is computed while the user is idle and is ready when a completion comes.

import type { Tokenizer } from '../engine/tokenizer';
import type { EngineHost } from '../scheduler/engine-host';
import { commonPrefixLength } from '../scheduler/prefix';
import type { Log } from '../server/log';
import { Workspace } from '../workspace/workspace';
import { layoutRepository, type RepositoryLayout, type SpecialIds, TokenCache } from './layout';

const BACKGROUND_DEBOUNCE_MS = 150;

export class RepositoryContext {
  readonly cache: TokenCache;
  private readonly workspaces = new Map<string, { ws: Workspace; users: number }>();
  private readonly layouts = new WeakMap<Workspace, { version: number; layout: RepositoryLayout }>();
  private current: Workspace | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** the ids last given to the engine as its background target */
  private target: Int32Array | null = null;
  /** the per-file cache size above which the next layout prunes it */
  private pruneAt = 256;

  constructor(
    readonly tokenizer: Tokenizer,
    readonly special: SpecialIds,
    /** tokens the repository prefix may use: the context window minus room for the requests on top */
    readonly budgetTokens: number,
    private readonly engine: EngineHost,
    private readonly log: Log,
  ) {
    this.cache = new TokenCache(tokenizer, special);
  }

  /** The shared workspace for these folders (a new one when no other client has the same set). */
  acquire(folders: { uri: string; name?: string }[]): Workspace {
    const key = folders.map((f) => f.uri).sort().join('\n');
    let entry = this.workspaces.get(key);
    if (!entry) {
      const name = folders[0]?.name || (folders[0] ? decodeURIComponent(folders[0].uri.split('/').filter(Boolean).pop() ?? 'workspace') : 'workspace');
      const ws = new Workspace(name);
      ws.setFolders(folders);
      entry = { ws, users: 0 };
      this.workspaces.set(key, entry);
    }
    entry.users++;
    return entry.ws;
  }

  /** A client let go of its workspace (disconnected or changed folders). */
  release(ws: Workspace): void {
    for (const [key, e] of this.workspaces) {
      if (e.ws !== ws) continue;
      e.users--;
      this.log.debug('workspace released', { workspace: ws.name, users: e.users });
      if (e.users <= 0) {
        this.workspaces.delete(key);
        if (this.current === ws) {
          this.current = null;
          this.target = null;
          this.engine.setBackground(new Int32Array(0));
        }
      }
    }
  }

  layout(ws: Workspace): RepositoryLayout {
    const hit = this.layouts.get(ws);
    if (hit && hit.version === ws.version) return hit.layout;
    const t0 = Date.now();
    const layout = layoutRepository(this.cache, ws.name, ws.listFiles(), ws.activeUri, this.budgetTokens);
    this.layouts.set(ws, { version: ws.version, layout });
    this.log.debug('repository layout', { workspace: ws.name, tokens: layout.ids.length, files: layout.files.length, cut: layout.cut.length, ms: Date.now() - t0 });
    this.pruneCache();
    return layout;
  }

  /** Edited files leave their old versions in the per-file cache: each time it has doubled since the last pruning,
   *  keep only the entries of files some workspace still has. */
  private pruneCache(): void {
    if (this.cache.size <= this.pruneAt) return;
    const live = new Set<string>();
    for (const { ws } of this.workspaces.values()) for (const f of ws.listFiles()) live.add(TokenCache.key(f.path, f.hash));
    this.cache.retain(live);
    this.pruneAt = 2 * this.cache.size + 256;
  }

  /** This workspace is the one in use: keep its layout computed in the background. */
  touch(ws: Workspace): void {
    this.current = ws;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.current !== ws) return;
      try {
        const ids = this.layout(ws).ids;
        this.log.debug('background target', { workspace: ws.name, tokens: ids.length });
        this.target = ids;
        this.engine.setBackground(ids);
      } catch (e) {
        this.log.error('repository layout failed', { error: (e as Error).message });
      }
    }, BACKGROUND_DEBOUNCE_MS);
  }

  /** How much of `ws`'s layout the engine holds computed: all of it once indexing is done; while the background
   *  prefill is still running, the part done so far (requests then use only that much of the repository, so
   *  they are served at once instead of waiting for indexing to finish). */
  computedPrefix(ws: Workspace): number {
    const layout = this.layout(ws);
    const s = this.engine.stats;
    const target = this.target;
    if (!this.engine.prefixReuse || target === null || s.targetTokens !== target.length) return layout.ids.length;
    // The engine's figure is about the last target it was given; the layout asked about may differ from it (e.g.
    // the active document changed): what is computed of this layout is their common prefix, as far as done.
    return commonPrefixLength(target, Math.min(target.length, s.cachedTokens), layout.ids);
  }

  currentLayout(): RepositoryLayout | null {
    return this.current ? this.layout(this.current) : null;
  }

  currentWorkspace(): Workspace | null {
    return this.current;
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
