// Where an inline completion ends. A model left alone writes on past the point a user wants: into the next
// function, or repeating the code that already follows the cursor (the most common complaint about completion
// tools). The boundary is decided on the text generated so far, token by token, so generation stops as soon as
// the answer is complete instead of running to max tokens:
//   - single-line mode (text after the cursor on its line): the end of the line;
//   - multi-line mode: a closing bracket that closes a block opened before the cursor (the block is done), a
//     blank line after a complete statement at bracket depth 0, a line that starts to repeat the suffix, or
//     `maxLines` lines.

export interface BoundaryOptions {
  /** text after the cursor (the document's suffix) */
  suffix: string;
  /** text of the cursor's line before the cursor */
  linePrefix: string;
  /** most lines a multi-line completion may have */
  maxLines: number;
  /** end at a blank line after a complete statement (completions: yes; regenerating a selection: no) */
  stopAtBlankLine?: boolean;
}

export interface BoundaryVerdict {
  /** the text to keep (a prefix of what was generated) */
  text: string;
  /** true when the completion is complete: stop generating */
  done: boolean;
  reason?: 'line' | 'block' | 'blank' | 'suffix' | 'lines';
}

const OPEN = '([{';
const CLOSE = ')]}';

export class CompletionBoundary {
  readonly singleLine: boolean;
  private readonly suffixLines: string[];
  private readonly maxLines: number;
  private readonly stopAtBlankLine: boolean;

  constructor(opts: BoundaryOptions) {
    this.stopAtBlankLine = opts.stopAtBlankLine ?? true;
    const restOfLine = opts.suffix.split('\n', 1)[0];
    // Text after the cursor on its line (other than closing brackets/quotes/semicolons an editor auto-inserted)
    // means the user is in the middle of a line: complete that line only.
    this.singleLine = /[^\s)\]}'"`;,]/.test(restOfLine);
    this.suffixLines = opts.suffix
      .split('\n')
      .slice(restOfLine.trim() === '' ? 1 : 0)
      .map((l) => l.trim())
      .filter((l) => l.length > 0)
      .slice(0, 3);
    this.maxLines = Math.max(1, opts.maxLines);
  }

  /** Judges the whole generated text so far. */
  check(generated: string): BoundaryVerdict {
    if (this.singleLine) {
      const nl = generated.indexOf('\n');
      if (nl >= 0) return { text: generated.slice(0, nl), done: true, reason: 'line' };
      return { text: generated, done: false };
    }
    let depth = 0;
    let inString: string | null = null;
    let lineStart = 0;
    let lines = 0;
    let sawCode = false;
    for (let i = 0; i < generated.length; i++) {
      const c = generated[i];
      if (inString) {
        if (c === '\\') i++;
        else if (c === inString || (c === '\n' && inString !== '`')) inString = null;
        continue;
      }
      if (c === '"' || c === "'" || c === '`') {
        inString = c;
      } else if (OPEN.includes(c)) {
        depth++;
      } else if (CLOSE.includes(c)) {
        depth--;
        if (depth < 0) {
          // Closes a block opened before the cursor: the completion is the block's remaining body.
          return { text: trimTrailingBlankLines(generated.slice(0, lineStart === i ? lineStart : i)), done: true, reason: 'block' };
        }
      } else if (c === '\n') {
        const line = generated.slice(lineStart, i);
        lines++;
        if (this.repeatsSuffix(line)) return { text: trimTrailingBlankLines(generated.slice(0, lineStart)), done: true, reason: 'suffix' };
        if (this.stopAtBlankLine && line.trim() === '' && sawCode && depth === 0) {
          return { text: trimTrailingBlankLines(generated.slice(0, lineStart)), done: true, reason: 'blank' };
        }
        if (line.trim() !== '') sawCode = true;
        if (lines >= this.maxLines) return { text: trimTrailingBlankLines(generated.slice(0, i)), done: true, reason: 'lines' };
        lineStart = i + 1;
      }
    }
    return { text: generated, done: false };
  }

  private repeatsSuffix(line: string): boolean {
    const t = line.trim();
    return t.length >= 4 && this.suffixLines.length > 0 && this.suffixLines[0] === t;
  }
}

function trimTrailingBlankLines(text: string): string {
  return text.replace(/(\n[ \t]*)+$/, '');
}

/** The final clean-up of a completion: nothing that only repeats what follows the cursor, no trailing blanks. */
export function finishCompletion(text: string, suffix: string, singleLine: boolean): string {
  let out = singleLine ? text.replace(/\s+$/, '') : text.replace(/[ \t]+$/gm, '').replace(/\n+$/, '');
  if (singleLine) {
    // Drop a tail that the rest of the line already has (e.g. the model wrote `)` and the editor has `)` after the cursor).
    const rest = suffix.split('\n', 1)[0];
    for (let k = Math.min(rest.length, out.length); k > 0; k--) {
      if (out.endsWith(rest.slice(0, k)) && rest.slice(0, k).trim() !== '') {
        out = out.slice(0, out.length - k);
        break;
      }
    }
  }
  if (out.trim() === '') return '';
  const next = suffix.trimStart();
  if (next.length > 0 && out.trim().length > 0 && next.startsWith(out.trim())) return '';
  return out;
}
