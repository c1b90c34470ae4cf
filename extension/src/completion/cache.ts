// Completion cache with typed-ahead forwarding: when the user types the first characters of a suggestion that is
// on screen, the rest of it is served from here without a new request. LRU over documents and positions.

export interface CacheKey {
  uri: string;
  /** document text before the cursor (the cache compares its tail, so pass what is cheap: the last few KB) */
  prefix: string;
  /** text after the cursor on the same line and below (also a tail-bounded slice) */
  suffix: string;
}

interface Entry extends CacheKey {
  insertText: string;
}

export class CompletionCache {
  private entries: Entry[] = [];

  constructor(private readonly capacity = 100) {}

  put(key: CacheKey, insertText: string): void {
    if (insertText === '') return;
    this.entries = this.entries.filter((e) => !(e.uri === key.uri && e.prefix === key.prefix && e.suffix === key.suffix));
    this.entries.push({ ...key, insertText });
    if (this.entries.length > this.capacity) this.entries.shift();
  }

  /**
   * A cached completion for this position: an exact hit, or an entry whose prefix plus the characters typed
   * since equals the current prefix and whose suggestion starts with those characters. Returns what is left to
   * insert (never empty), and refreshes the entry's recency.
   */
  get(key: CacheKey): string | null {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i];
      if (e === undefined || e.uri !== key.uri || e.suffix !== key.suffix) continue;
      if (!key.prefix.startsWith(e.prefix)) continue;
      const typed = key.prefix.slice(e.prefix.length);
      if (typed.length >= e.insertText.length || !e.insertText.startsWith(typed)) continue;
      this.entries.splice(i, 1);
      this.entries.push(e);
      return e.insertText.slice(typed.length);
    }
    return null;
  }

  /** Forget a document's entries (it changed somewhere other than at the cursor, or closed). */
  forget(uri: string): void {
    this.entries = this.entries.filter((e) => e.uri !== uri);
  }

  get size(): number {
    return this.entries.length;
  }
}
