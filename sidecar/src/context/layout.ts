// The repository as one prompt, laid out as the embedded model was trained (training/corpus/FORMAT.md):
//   <|repo_name|>NAME\n  <|file_sep|>path\n text  <|file_sep|>path\n text  …
// Files go from most stable to most recently edited, so an edit invalidates only the tail of the cached prefix;
// the active document is left out (its text follows the prefix in each request). When the repository exceeds the
// token budget, the least relevant files are cut: relevance is imports of the active document, its folder, path
// proximity and recency. Tokens are cached per file by content hash, so a layout costs tokenizing only what changed.

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

/** Tokens of one file block (`<|file_sep|>path\n` + text), cached by path and content hash. */
export class TokenCache {
  private readonly cache = new Map<string, Int32Array>();
  private hits = 0;

  constructor(private readonly tok: Tokenizer, private readonly ids: SpecialIds) {}

  fileBlock(filePath: string, hash: string, text: string): Int32Array {
    const key = `${hash}\0${filePath}`;
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

  /** Drops entries no file uses any more. */
  retain(live: Set<string>): void {
    for (const key of this.cache.keys()) if (!live.has(key)) this.cache.delete(key);
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
    rank = relevance(candidates, active);
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
    rank = rank ?? relevance(candidates, active);
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

/** A ranking function: higher = more relevant to the active document. */
function relevance(files: readonly FileView[], active: FileView | null): (f: FileView) => number {
  const imports = active ? importedPaths(active) : new Set<string>();
  const activeDir = active ? path.posix.dirname(active.path) : '';
  const newest = Math.max(1, ...files.map((f) => f.lastEdited));
  return (f) => {
    let score = 0;
    if (imports.has(stripExt(f.path))) score += 100;
    const dir = path.posix.dirname(f.path);
    if (active && dir === activeDir) score += 40;
    if (active) score += 5 * commonDepth(dir, activeDir);
    if (f.lastEdited > 0) score += 30 * (f.lastEdited / newest);
    // Small files cost little context: a mild preference.
    score -= Math.log10(1 + f.text.length);
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
