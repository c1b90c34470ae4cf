// Parses a model's answer into search/replace blocks. The format (as in aider and most edit-capable assistants):
//
//   ```ts
//   src/path/to/file.ts
//   <<<<<<< SEARCH
//   text that is in the file now
//   =======
//   text to put there instead
//   >>>>>>> REPLACE
//   ```
//
// Models get this wrong in many small ways, so the parser is tolerant: the path may stand on the line before the
// fence, inside it, on the fence's info line or after the SEARCH marker; markers may have 5–9 characters and any
// case; fences may be missing; several blocks may share one path. What it cannot make sense of becomes a problem
// with the block's index, and never stops the other blocks from being read.

/** One search/replace block as the model wrote it. */
export interface EditBlock {
  /** position among all blocks of the answer (0-based), malformed ones included, so reports line up */
  index: number;
  /** the file path as written (cleaned of markdown decoration); null when the answer never named one */
  path: string | null;
  /** text to find; '' means "insert into a new or empty file" (or append when the file is not empty) */
  search: string;
  /** text to put in its place */
  replace: string;
}

/** A block that could not be read, with the reason. */
export interface EditParseProblem {
  index: number;
  message: string;
}

export interface ParsedEditBlocks {
  blocks: EditBlock[];
  problems: EditParseProblem[];
}

const SEARCH_MARKER = /^\s*<{5,9}\s*SEARCH\b\s*(.*)$/i;
const DIVIDER_MARKER = /^\s*={5,9}\s*$/;
const REPLACE_MARKER = /^\s*>{5,9}\s*REPLACE\b.*$/i;
const FENCE = /^\s*(`{3,}|~{3,})\s*(.*)$/;

/** Strips the decoration models put around a path: `**x**`, `` `x` ``, `# x`, `File: x`, `x:`, quotes. */
export function cleanPath(raw: string): string | null {
  let s = raw.trim();
  s = s.replace(/^(?:#+|\/\/|--|;|\*+|-)\s*/, '');
  s = s.replace(/^(?:file(?:name|path)?|path)\s*:\s*/i, '');
  s = s.replace(/^[*_`'"]+|[*_`'"]+$/g, '');
  s = s.replace(/:$/, '').trim();
  if (s === '' || s.length > 400) return null;
  if (/\s/.test(s)) return null; // prose, not a path
  if (!/^[\w@.\-+~/\\$[\]]+$/.test(s)) return null; // code such as `f(x);`
  if (!/[./\\]/.test(s)) return null; // paths have an extension or a directory
  if (/^[<>=]{3,}/.test(s)) return null;
  return s;
}

/** The path a fence's info string may carry: "```ts src/a.ts" or "```src/a.ts". */
function pathFromFenceInfo(info: string): string | null {
  const words = info.trim().split(/\s+/).filter((w) => w !== '');
  for (let i = words.length - 1; i >= 0; i--) {
    const word = words[i] ?? '';
    if (/[./\\]/.test(word)) return cleanPath(word);
  }
  return null;
}

/**
 * Reads every search/replace block of `text`. Blocks without a path of their own take the previous block's path
 * (models often write one path and then several blocks); the first ones may have none (path null).
 */
export function parseEditBlocks(text: string): ParsedEditBlocks {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  const blocks: EditBlock[] = [];
  const problems: EditParseProblem[] = [];
  let index = 0;
  let lastPath: string | null = null;
  /** candidate path seen since the last block (line before SEARCH, fence info, line before a fence) */
  let pendingPath: string | null = null;

  let i = 0;
  while (i < lines.length) {
    const line = lines[i] ?? '';
    const fence = FENCE.exec(line);
    if (fence) {
      const fromInfo = pathFromFenceInfo(fence[2] ?? '');
      if (fromInfo !== null) pendingPath = fromInfo;
      i++;
      continue;
    }
    const search = SEARCH_MARKER.exec(line);
    if (!search) {
      if (line.trim() !== '' && !DIVIDER_MARKER.test(line) && !REPLACE_MARKER.test(line)) {
        // Only a line that is nothing but a path counts ("Change src/a.ts like this:" is prose).
        const candidate = cleanPath(line);
        if (candidate !== null) pendingPath = candidate;
      }
      i++;
      continue;
    }

    const blockIndex = index++;
    const afterMarker = cleanPath(search[1] ?? '');
    const path: string | null = afterMarker ?? pendingPath ?? lastPath;
    pendingPath = null;
    i++;

    const searchLines: string[] = [];
    const replaceLines: string[] = [];
    let state: 'search' | 'replace' = 'search';
    let closed = false;
    let problem: string | null = null;
    while (i < lines.length) {
      const l = lines[i] ?? '';
      if (SEARCH_MARKER.test(l)) {
        problem =
          state === 'search'
            ? 'a new <<<<<<< SEARCH began before this block had its ======= divider'
            : 'a new <<<<<<< SEARCH began before this block ended with >>>>>>> REPLACE';
        break; // the outer loop reads the new block
      }
      if (state === 'search' && DIVIDER_MARKER.test(l)) {
        state = 'replace';
        i++;
        continue;
      }
      if (REPLACE_MARKER.test(l)) {
        i++;
        if (state === 'search') problem = '>>>>>>> REPLACE came before the ======= divider';
        else closed = true;
        break;
      }
      (state === 'search' ? searchLines : replaceLines).push(l);
      i++;
    }
    if (problem === null && !closed) {
      problem =
        state === 'search'
          ? 'the answer ended inside the SEARCH part (no ======= divider)'
          : 'the answer ended before >>>>>>> REPLACE (the block is incomplete)';
    }
    if (path !== null) lastPath = path;
    if (problem !== null) {
      problems.push({ index: blockIndex, message: `block ${blockIndex + 1}${path ? ` (${path})` : ''}: ${problem}` });
      continue;
    }
    blocks.push({ index: blockIndex, path, search: joinLines(searchLines), replace: joinLines(replaceLines) });
  }
  return { blocks, problems };
}

/** Lines back to text; every non-empty part ends with a newline, so blocks splice whole lines. */
function joinLines(lines: string[]): string {
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}
