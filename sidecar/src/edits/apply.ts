// Applies search/replace blocks to one file's text. Each block is tried three ways, in order of trust:
//   exact       the SEARCH text occurs verbatim (line endings normalised);
//   whitespace  the SEARCH lines equal file lines once indentation and runs of spaces are ignored (and blank
//               lines at its edges dropped); the REPLACE text is re-indented by the same offset;
//   fuzzy       the most similar run of lines (character edit distance) is similar enough and clearly the best.
// Blocks apply in order to the evolving text; a block that fails leaves the text as it was and is reported,
// and never cancels the others.

import type { BlockMatch, EditBlockReport } from '../protocol';
import type { EditBlock } from './parse';
import { similarity } from './similarity';

/** Below this similarity a fuzzy candidate is not taken. */
export const FUZZY_THRESHOLD = 0.8;
/** A fuzzy winner must beat the best non-overlapping runner-up by this much, or the block is ambiguous. */
export const FUZZY_MARGIN = 0.03;

export interface AppliedEdits {
  /** the text after every block that matched */
  text: string;
  /** one report per block, in the order given */
  reports: EditBlockReport[];
}

/** The applier only needs the text parts of a block; `index` labels its report. */
export type ApplicableBlock = Pick<EditBlock, 'index' | 'search' | 'replace'>;

export function applyEditBlocks(originalText: string, blocks: readonly ApplicableBlock[]): AppliedEdits {
  const eol = originalText.includes('\r\n') ? '\r\n' : '\n';
  const hadFinalNewline = originalText === '' || /\n$/.test(originalText);
  // Work on LF text that ends with a newline, so blocks (which always end with one) splice whole lines.
  let text = originalText.replace(/\r\n/g, '\n');
  if (!text.endsWith('\n') && text !== '') text += '\n';

  const reports: EditBlockReport[] = [];
  for (const block of blocks) {
    const search = block.search.replace(/\r\n/g, '\n');
    const replace = block.replace.replace(/\r\n/g, '\n');
    const outcome = applyOne(text, search, replace);
    if (outcome.match === 'failed') {
      reports.push({ index: block.index, match: 'failed', message: outcome.message });
    } else {
      text = outcome.text;
      reports.push(
        outcome.message === undefined
          ? { index: block.index, match: outcome.match }
          : { index: block.index, match: outcome.match, message: outcome.message },
      );
    }
  }

  if (!hadFinalNewline && text.endsWith('\n')) text = text.slice(0, -1);
  if (eol === '\r\n') text = text.replace(/\n/g, '\r\n');
  return { text, reports };
}

type Outcome =
  | { match: Exclude<BlockMatch, 'failed'>; text: string; message?: string }
  | { match: 'failed'; message: string };

function applyOne(text: string, search: string, replace: string): Outcome {
  if (search.trim() === '') {
    // An empty SEARCH creates the file's content, or appends to a file that has some.
    if (text.trim() === '') return { match: 'exact', text: replace };
    return { match: 'exact', text: text + replace, message: 'empty SEARCH: appended at the end of the file' };
  }

  const exactAt = indexOfWholeLines(text, search, 0);
  if (exactAt >= 0) {
    const second = indexOfWholeLines(text, search, exactAt + 1);
    return {
      match: 'exact',
      text: text.slice(0, exactAt) + replace + text.slice(exactAt + search.length),
      ...(second >= 0 ? { message: 'SEARCH text occurs more than once: replaced the first occurrence' } : {}),
    };
  }

  const fileLines = splitLines(text);
  const searchLines = trimBlankEdges(splitLines(search));
  const replaceLines = splitLines(replace);

  const loose = findWhitespaceInsensitive(fileLines, searchLines);
  if (loose !== null) {
    const reindented = reindent(replaceLines, searchLines, fileLines.slice(loose, loose + searchLines.length));
    return { match: 'whitespace', text: spliceLines(fileLines, loose, searchLines.length, reindented) };
  }

  const fuzzy = findFuzzy(fileLines, searchLines);
  if (fuzzy.kind === 'found') {
    const matched = fileLines.slice(fuzzy.start, fuzzy.start + fuzzy.length);
    const reindented = reindent(replaceLines, searchLines, matched);
    return {
      match: 'fuzzy',
      text: spliceLines(fileLines, fuzzy.start, fuzzy.length, reindented),
      message: `matched lines ${fuzzy.start + 1}–${fuzzy.start + fuzzy.length} at similarity ${fuzzy.score.toFixed(2)}`,
    };
  }
  return { match: 'failed', message: fuzzy.message };
}

/** Like indexOf, but only where the match starts a line (a mid-line hit would mangle indentation). */
function indexOfWholeLines(text: string, search: string, from: number): number {
  for (let at = text.indexOf(search, from); at >= 0; at = text.indexOf(search, at + 1)) {
    if (at === 0 || text[at - 1] === '\n') return at;
  }
  return -1;
}

/** Lines without their newline; a trailing newline does not make an extra empty line. */
function splitLines(text: string): string[] {
  if (text === '') return [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

function trimBlankEdges(lines: string[]): string[] {
  let start = 0;
  let end = lines.length;
  while (start < end && (lines[start] ?? '').trim() === '') start++;
  while (end > start && (lines[end - 1] ?? '').trim() === '') end--;
  return lines.slice(start, end);
}

function spliceLines(fileLines: string[], start: number, count: number, insert: string[]): string {
  const out = [...fileLines.slice(0, start), ...insert, ...fileLines.slice(start + count)];
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}

function normaliseWhitespace(line: string): string {
  return line.trim().replace(/\s+/g, ' ');
}

/** First start index where every search line equals the file line ignoring whitespace amounts; null if none. */
function findWhitespaceInsensitive(fileLines: string[], searchLines: string[]): number | null {
  if (searchLines.length === 0 || searchLines.length > fileLines.length) return null;
  const want = searchLines.map(normaliseWhitespace);
  const have = fileLines.map(normaliseWhitespace);
  for (let start = 0; start + want.length <= have.length; start++) {
    let ok = true;
    for (let k = 0; k < want.length; k++) {
      if (have[start + k] !== want[k]) {
        ok = false;
        break;
      }
    }
    if (ok) return start;
  }
  return null;
}

function leadingWhitespace(line: string): string {
  return /^[ \t]*/.exec(line)?.[0] ?? '';
}

/**
 * Shifts the REPLACE lines by the indentation difference between what the model wrote in SEARCH and what the
 * file has (models often drop a class's or function's indentation). Only a uniform shift is applied.
 */
function reindent(replaceLines: string[], searchLines: string[], matchedLines: string[]): string[] {
  const firstSearch = searchLines.find((l) => l.trim() !== '');
  const firstMatched = matchedLines.find((l) => l.trim() !== '');
  if (firstSearch === undefined || firstMatched === undefined) return replaceLines;
  const wrote = leadingWhitespace(firstSearch);
  const has = leadingWhitespace(firstMatched);
  if (wrote === has) return replaceLines;
  if (has.startsWith(wrote)) {
    const add = has.slice(wrote.length);
    return replaceLines.map((l) => (l.trim() === '' ? l : add + l));
  }
  if (wrote.startsWith(has)) {
    const remove = wrote.slice(has.length);
    return replaceLines.map((l) => (l.startsWith(remove) ? l.slice(remove.length) : l));
  }
  return replaceLines;
}

type FuzzyResult =
  | { kind: 'found'; start: number; length: number; score: number }
  | { kind: 'none'; message: string };

/** Candidate windows examined at full character similarity (the rest are pruned by shared lines). */
const MAX_FUZZY_CANDIDATES = 24;

function findFuzzy(fileLines: string[], searchLines: string[]): FuzzyResult {
  const m = searchLines.length;
  if (m === 0) return { kind: 'none', message: 'SEARCH has only blank lines' };
  if (fileLines.length === 0) return { kind: 'none', message: 'SEARCH text not found: the file is empty' };
  const want = searchLines.map(normaliseWhitespace);
  const wantJoined = want.join('\n');
  const have = fileLines.map(normaliseWhitespace);

  // Prune: windows (of m−1 … m+1 lines, allowing one dropped or added line) ranked by how many of the search
  // lines they share verbatim; only the best are compared character by character.
  const wantSet = new Map<string, number>();
  for (const w of want) if (w !== '') wantSet.set(w, (wantSet.get(w) ?? 0) + 1);
  const lengths = [m, m - 1, m + 1].filter((len) => len >= 1 && len <= fileLines.length);
  const candidates: { start: number; length: number; shared: number }[] = [];
  for (const length of lengths) {
    for (let start = 0; start + length <= have.length; start++) {
      let shared = 0;
      const left = new Map(wantSet);
      for (let k = 0; k < length; k++) {
        const line = have[start + k] ?? '';
        const n = left.get(line);
        if (n !== undefined && n > 0) {
          shared++;
          left.set(line, n - 1);
        }
      }
      candidates.push({ start, length, shared });
    }
  }
  candidates.sort((a, b) => b.shared - a.shared || Math.abs(a.length - m) - Math.abs(b.length - m));
  const examined = candidates.slice(0, MAX_FUZZY_CANDIDATES).map((c) => ({
    ...c,
    score: similarity(wantJoined, have.slice(c.start, c.start + c.length).join('\n')),
  }));
  examined.sort((a, b) => b.score - a.score || Math.abs(a.length - m) - Math.abs(b.length - m));
  const best = examined[0];
  if (best === undefined) return { kind: 'none', message: 'SEARCH text not found' };
  if (best.score < FUZZY_THRESHOLD) {
    return {
      kind: 'none',
      message: `SEARCH text not found (closest: lines ${best.start + 1}–${best.start + best.length}, similarity ${best.score.toFixed(2)} < ${FUZZY_THRESHOLD})`,
    };
  }
  const rival = examined.find(
    (c) => c.start + c.length <= best.start || c.start >= best.start + best.length, // does not overlap the best
  );
  if (rival !== undefined && best.score - rival.score < FUZZY_MARGIN) {
    return {
      kind: 'none',
      message: `SEARCH text is ambiguous: lines ${best.start + 1} and ${rival.start + 1} match about equally (similarity ${best.score.toFixed(2)} vs ${rival.score.toFixed(2)})`,
    };
  }
  return { kind: 'found', start: best.start, length: best.length, score: best.score };
}
