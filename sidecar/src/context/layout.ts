// The repository as one prompt, laid out as the embedded model was trained (training/corpus/FORMAT.md):
//   <|repo_name|>NAME\n  <|file_sep|>path\n text  <|file_sep|>path\n text  …
// Files go from most stable to most recently edited, so an edit invalidates only the tail of the cached prefix;
// the active document is left out (its text follows the prefix in each request). When the repository exceeds the
// token budget, the least relevant files are cut: relevance is mostly the identifiers a file shares with the active
// document, then imports of the active document, its folder, path proximity and recency. Tokens and identifier sets
// are cached per file by content hash, so a layout costs tokenizing only what changed.

import * as path from 'node:path';

import type { Tokenizer } from '../engine/tokenizer';
import type { FileView } from '../workspace/workspace';

export interface SpecialIds {
  repoName: number | null;
  fileSep: number | null;
  fimPrefix: number | null;
  fimSuffix: number | null;
  fimMiddle: number | null;
  fimOrder: 'psm' | 'spm';
  imStart: number | null;
  imEnd: number | null;
  eos: number[];
  /** every id that ends a generation: end-of-text and the layout's structure tokens (repository, file, FIM, chat) */
  stops: number[];
}

export function specialIds(tok: Tokenizer, eos: readonly number[]): SpecialIds {
  const id = (s: string): number | null => tok.specialTokens.get(s) ?? null;
  const ids = {
    repoName: id('<|repo_name|>'),
    fileSep: id('<|file_sep|>'),
    fimPrefix: tok.fim?.prefix.id ?? null,
    fimSuffix: tok.fim?.suffix.id ?? null,
    fimMiddle: tok.fim?.middle.id ?? null,
    fimOrder: tok.fim?.order ?? 'psm',
    imStart: id('<|im_start|>'),
    imEnd: id('<|im_end|>'),
    eos: [...new Set([...eos, ...(tok.eosId !== null ? [tok.eosId] : [])])],
  };
  const structure = [ids.repoName, ids.fileSep, ids.fimPrefix, ids.fimSuffix, ids.fimMiddle, ids.imStart, ids.imEnd];
  return { ...ids, stops: [...ids.eos, ...structure.filter((x): x is number => x !== null)] };
}

/**
 * Weight of identifier similarity in a file's relevance: the Jaccard similarity of the two files' identifier sets
 * (0..1) times this, beside 100 for a file the active document imports. Similarity decides: on the held-out
 * packages (`training/context_recall.py`, 8K-token prompts) the identifiers a target line needs that its own file
 * lacks were in the kept files for 54% of them ranked by imports / folder / path alone, 62% with this weight (64% at
 * 30,000, 59% at 1,000).
 */
export const SIMILARITY_WEIGHT = 5000;

const KEYWORDS = new Set(
  ('abstract any as async await boolean break case catch class const constructor continue debugger declare ' +
    'default delete do else enum export extends false finally for from function get if implements import in infer ' +
    'instanceof interface is keyof let module namespace never new null number object of package private protected ' +
    'public readonly require return set static string super switch symbol this throw true try type typeof undefined ' +
    'unique unknown var void while with yield').split(' '),
);

/** Characters of a file that its identifier set is read from: bounds the first layout of a very large repository
 *  (every file is read once, then cached by hash). */
export const IDENTIFIER_SCAN_CHARS = 65536;

/** The identifiers of a source text (its first IDENTIFIER_SCAN_CHARS characters): words of two or more characters
 *  that are not TS / JS keywords. */
export function identifierSet(text: string): Set<string> {
  const out = new Set<string>();
  const scanned = text.length > IDENTIFIER_SCAN_CHARS ? text.slice(0, IDENTIFIER_SCAN_CHARS) : text;
  for (const m of scanned.matchAll(/[A-Za-z_$][\w$]*/g)) if (m[0].length > 1 && !KEYWORDS.has(m[0])) out.add(m[0]);
  return out;
}

/** |a ∩ b| / |a ∪ b|; 0 when both are empty. */
export function jaccard(a: ReadonlySet<string>, b: ReadonlySet<string>): number {
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  let common = 0;
  for (const x of small) if (large.has(x)) common++;
  const union = a.size + b.size - common;
  return union === 0 ? 0 : common / union;
}

/** An active document whose identifier set has grown by more than this share since its snapshot gets a new one. */
const ACTIVE_SNAPSHOT_RENEWAL = 0.25;

/** What a layout derives per file, cached by path and content hash: the tokens of its block (`<|file_sep|>path\n` +
 *  text), its identifier set and its similarity to the active document's snapshot. */
export class TokenCache {
  private readonly cache = new Map<string, Int32Array>();
  private readonly identifierSets = new Map<string, ReadonlySet<string>>();
  private active: { uri: string; ids: ReadonlySet<string> } | null = null;
  /** similarity to `active`, by content hash; emptied when the snapshot changes */
  private readonly similarities = new Map<string, number>();
  private hits = 0;

  constructor(private readonly tok: Tokenizer, private readonly ids: SpecialIds) {}

  static key(filePath: string, hash: string): string {
    return `${hash}\0${filePath}`;
  }

  identifiers(hash: string, text: string): ReadonlySet<string> {
    let s = this.identifierSets.get(hash);
    if (!s) {
      s = identifierSet(text);
      this.identifierSets.set(hash, s);
    }
    return s;
  }

  /**
   * The active document's identifiers as relevance uses them: a snapshot taken when the document became active and
   * renewed only once it has gained many identifiers, so that typing does not move files across the cut (each move
   * would invalidate the cached repository prefix from the first changed file on).
   */
  activeIdentifiers(uri: string, text: string): ReadonlySet<string> {
    const now = identifierSet(text);
    if (this.active?.uri === uri) {
      let added = 0;
      for (const x of now) if (!this.active.ids.has(x)) added++;
      if (added <= ACTIVE_SNAPSHOT_RENEWAL * this.active.ids.size) return this.active.ids;
    }
    this.active = { uri, ids: now };
    this.similarities.clear();
    return now;
  }

  /** Jaccard similarity of a file to the active snapshot (call activeIdentifiers first). */
  similarityToActive(f: { hash: string; text: string }): number {
    if (!this.active) return 0;
    let s = this.similarities.get(f.hash);
    if (s === undefined) {
      s = jaccard(this.active.ids, this.identifiers(f.hash, f.text));
      this.similarities.set(f.hash, s);
    }
    return s;
  }

  fileBlock(filePath: string, hash: string, text: string): Int32Array {
    const key = TokenCache.key(filePath, hash);
    let t = this.cache.get(key);
    if (t) {
      this.hits++;
      return t;
    }
    t = Int32Array.from([...this.header(filePath), ...this.tok.encode(text, { specials: 'plain' })]);
    this.cache.set(key, t);
    return t;
  }

  header(filePath: string): number[] {
    return this.ids.fileSep !== null
      ? [this.ids.fileSep, ...this.tok.encode(`${filePath}\n`, { specials: 'plain' })]
      : this.tok.encode(`// file: ${filePath}\n`, { specials: 'plain' });
  }

  repoHeader(name: string): number[] {
    return this.ids.repoName !== null
      ? [this.ids.repoName, ...this.tok.encode(`${name}\n`, { specials: 'plain' })]
      : this.tok.encode(`// repository: ${name}\n`, { specials: 'plain' });
  }

  /** Drops entries no file uses any more (`live`: TokenCache.key of every file still present). */
  retain(live: Set<string>): void {
    for (const key of this.cache.keys()) if (!live.has(key)) this.cache.delete(key);
    const hashes = new Set([...live].map((k) => k.slice(0, k.indexOf('\0'))));
    for (const h of this.identifierSets.keys()) if (!hashes.has(h)) this.identifierSets.delete(h);
    for (const h of this.similarities.keys()) if (!hashes.has(h)) this.similarities.delete(h);
  }

  get size(): number {
    return this.cache.size;
  }
}

export interface LayoutFile {
  uri: string;
  path: string;
  /** token offset of the file block in the prompt */
  start: number;
  tokens: number;
}

export interface RepositoryLayout {
  ids: Int32Array;
  files: LayoutFile[];
  /** files cut to fit the budget */
  cut: { uri: string; path: string }[];
}

/** Rough token count before tokenizing (for the relevance cut of a repository far over budget). */
const CHARS_PER_TOKEN = 3.5;

export function layoutRepository(
  cache: TokenCache, repoName: string, files: readonly FileView[], activeUri: string | null, budgetTokens: number,
): RepositoryLayout {
  const candidates = files.filter((f) => f.uri !== activeUri);
  const active = files.find((f) => f.uri === activeUri) ?? null;
  const header = cache.repoHeader(repoName);
  let kept = candidates;
  const cut: { uri: string; path: string }[] = [];
  const estimate = (f: FileView): number => Math.ceil(f.text.length / CHARS_PER_TOKEN) + 8;
  let rank: ((f: FileView) => number) | null = null;
  let estimated = header.length + kept.reduce((n, f) => n + estimate(f), 0);
  if (estimated > budgetTokens) {
    rank = relevance(cache, candidates, active);
    // A repository far over budget: drop the least relevant files by estimate first, so that only a little more
    // than what can fit is ever tokenized; the exact cut below finishes the job.
    const order = [...candidates].sort((a, b) => rank!(a) - rank!(b));
    const drop = new Set<string>();
    for (const f of order) {
      if (estimated <= budgetTokens * 1.5) break;
      drop.add(f.uri);
      estimated -= estimate(f);
    }
    kept = candidates.filter((f) => !drop.has(f.uri));
    for (const f of candidates) if (drop.has(f.uri)) cut.push({ uri: f.uri, path: f.path });
  }
  const blockOf = new Map<string, Int32Array>();
  let total = header.length;
  for (const f of kept) {
    const b = cache.fileBlock(f.path, f.hash, f.text);
    blockOf.set(f.uri, b);
    total += b.length;
  }
  if (total > budgetTokens) {
    rank = rank ?? relevance(cache, candidates, active);
    const order = [...kept].sort((a, b) => rank!(a) - rank!(b));
    const drop = new Set<string>();
    for (const f of order) {
      if (total <= budgetTokens) break;
      drop.add(f.uri);
      total -= blockOf.get(f.uri)!.length;
      cut.push({ uri: f.uri, path: f.path });
    }
    kept = kept.filter((f) => !drop.has(f.uri));
  }
  // Stable files first (by path), then the edited ones from least to most recently edited.
  kept = [...kept].sort((a, b) => a.lastEdited - b.lastEdited || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const blocks: Int32Array[] = [];
  const out: LayoutFile[] = [];
  let n = header.length;
  for (const f of kept) {
    const b = blockOf.get(f.uri)!;
    out.push({ uri: f.uri, path: f.path, start: n, tokens: b.length });
    blocks.push(b);
    n += b.length;
  }
  const ids = new Int32Array(n);
  ids.set(header, 0);
  let at = header.length;
  for (const b of blocks) {
    ids.set(b, at);
    at += b.length;
  }
  return { ids, files: out, cut };
}

/** A ranking function: higher = more relevant to the active document (memoised per file). */
function relevance(cache: TokenCache, files: readonly FileView[], active: FileView | null): (f: FileView) => number {
  const imports = active ? importedPaths(active) : new Set<string>();
  const activeDir = active ? path.posix.dirname(active.path) : '';
  const newest = Math.max(1, ...files.map((f) => f.lastEdited));
  if (active) cache.activeIdentifiers(active.uri, active.text);
  const scores = new Map<string, number>();
  return (f) => {
    const known = scores.get(f.uri);
    if (known !== undefined) return known;
    let score = 0;
    if (active) score += SIMILARITY_WEIGHT * cache.similarityToActive(f);
    if (imports.has(stripExt(f.path))) score += 100;
    const dir = path.posix.dirname(f.path);
    if (active && dir === activeDir) score += 40;
    if (active) score += 5 * commonDepth(dir, activeDir);
    if (f.lastEdited > 0) score += 30 * (f.lastEdited / newest);
    // Small files cost little context: a mild preference.
    score -= Math.log10(1 + f.text.length);
    scores.set(f.uri, score);
    return score;
  };
}

/** Paths (without extension) of the relative imports of a TS/JS file, resolved against its folder. */
export function importedPaths(f: FileView): Set<string> {
  const out = new Set<string>();
  const dir = path.posix.dirname(f.path);
  const re = /(?:import|export)[^'"`;]*?from\s*['"]([^'"]+)['"]|require\(\s*['"]([^'"]+)['"]\s*\)|import\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (const m of f.text.matchAll(re)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (!spec || !spec.startsWith('.')) continue;
    const resolved = path.posix.normalize(path.posix.join(dir, spec));
    out.add(stripExt(resolved));
    out.add(`${resolved}/index`);
  }
  return out;
}

function stripExt(p: string): string {
  return p.replace(/\.(d\.ts|tsx?|jsx?|mjs|cjs|mts|cts)$/, '');
}

function commonDepth(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) i++;
  return i;
}
