// glance/edit: refactors and edits proposed as per-file new texts that the editor previews as diffs.
// Two strategies:
//   fim  (models trained for fill-in-the-middle, like the embedded one): the selection is regenerated in place,
//        with the instruction as a comment just before it in the prompt; one block replaces the selection.
//   chat (instruction-following models): the model answers with search/replace blocks, parsed and applied
//        tolerantly by ../edits (exact, then whitespace-insensitive, then fuzzy; a report per block).
// Either way the sidecar writes nothing: it returns texts computed against a base hash, and the editor applies
// them only onto that same text.

import * as path from 'node:path';

import type { CancellationToken } from 'vscode-languageserver/node';

import { chatPrompt, fimBlock, offsetAt, PromptError } from '../context/prompts';
import type { RepositoryContext } from '../context/repository';
import { applyEditBlocks, parseEditBlocks } from '../edits/index';
import type { EditKind, EditParams, EditResult, FileEdit, Range } from '../protocol/index';
import type { EngineHost } from '../scheduler/engine-host';
import { rpc } from '../server/rpc-error';
import { pathToUri, sha256, uriToPath, type Workspace } from '../workspace/workspace';
import { startTask } from './tasks';

export type EditMode = 'fim' | 'chat';

const INSTRUCTIONS: Record<Exclude<EditKind, 'edit'>, string> = {
  explain: 'Explain what this code does, step by step.',
  types: 'Add explicit TypeScript types to this code.',
  docs: 'Add documentation comments (JSDoc) to this code.',
  tests: 'Write unit tests for this code.',
  fix: 'Fix the problems in this code.',
};

export class EditService {
  constructor(
    private readonly ctx: RepositoryContext,
    private readonly engine: EngineHost,
    private readonly contextWindow: number,
    private readonly mode: EditMode,
  ) {}

  async edit(ws: Workspace, params: EditParams, token: CancellationToken, onDelta: (text: string) => void): Promise<EditResult> {
    const uri = params.target.uri;
    if (!ws.contains(uri)) throw rpc.outside(`${uri} is outside the workspace folders; Glance edits only files inside them`);
    const text = ws.textOf(uri);
    if (text === null) throw rpc.unknownDocument(uri);
    if (params.kind === 'edit' && !params.instruction?.trim()) throw rpc.invalidParams('an "edit" request needs an instruction');
    const { start, end } = this.offsets(text, params.target.range);
    let instruction = params.kind === 'edit' ? params.instruction!.trim() : INSTRUCTIONS[params.kind];
    if (params.kind === 'fix' && params.diagnostics?.length) {
      instruction += ' Problems: ' + params.diagnostics.map((d) => `line ${d.range.start.line + 1}: ${d.message}`).join('; ');
    }
    if (params.kind === 'explain' || this.mode === 'chat') return this.viaChat(ws, params, instruction, text, start, end, token, onDelta);
    if (params.kind === 'tests') return this.newTestFile(ws, uri, text, token, onDelta, params.maxTokens);
    return this.viaFim(ws, uri, text, start, end, instruction, token, onDelta, params.maxTokens);
  }

  private offsets(text: string, range: Range | undefined): { start: number; end: number } {
    if (!range) return { start: 0, end: text.length };
    const start = offsetAt(text, range.start.line, range.start.character);
    const end = offsetAt(text, range.end.line, range.end.character);
    if (start === null || end === null || end < start) {
      throw rpc.invalidParams(`range ${range.start.line}:${range.start.character}-${range.end.line}:${range.end.character} is not inside the document`);
    }
    return { start, end };
  }

  /** Regenerates text[start, end) by fill-in-the-middle, the instruction as a comment in front of it. */
  private async viaFim(
    ws: Workspace, uri: string, text: string, start: number, end: number, instruction: string,
    token: CancellationToken, onDelta: (t: string) => void, maxTokensParam: number | undefined,
  ): Promise<EditResult> {
    const s = this.ctx.special;
    if (s.fimPrefix === null || s.fimSuffix === null || s.fimMiddle === null) {
      throw rpc.model('the model has no fill-in-the-middle tokens; start the sidecar with --edit-mode chat');
    }
    if (start === end) throw rpc.invalidParams('select the code to edit (the selection is empty)');
    const selected = text.slice(start, end);
    const lineStart = text.lastIndexOf('\n', start - 1) + 1;
    const indent = /^[ \t]*/.exec(text.slice(lineStart, start))?.[0] ?? '';
    const comment = commentFor(uri, instruction);
    const atLineStart = text.slice(lineStart, start).trim() === '';
    const before = text.slice(0, start) + (atLineStart ? `${comment}\n${indent}` : '');
    const after = text.slice(end);
    const tok = this.ctx.tokenizer;
    const layout = this.ctx.layout(ws);
    const block = fimBlock(
      s, this.ctx.cache.header(ws.displayPath(uri)),
      tok.encode(before, { specials: 'plain' }).slice(-3072), tok.encode(after, { specials: 'plain' }).slice(0, 512),
    );
    const ids = new Int32Array(layout.ids.length + block.length);
    ids.set(layout.ids);
    ids.set(block, layout.ids.length);
    const selTokens = tok.encode(selected, { specials: 'plain' }).length;
    const maxTokens = Math.min(maxTokensParam ?? 2 * selTokens + 64, Math.max(1, this.contextWindow - ids.length));
    if (ids.length >= this.contextWindow) throw rpc.overflow(`the edit prompt needs ${ids.length} tokens; the context window is ${this.contextWindow}`);
    // The replacement ends where the enclosing block closes, where it starts repeating the code after the
    // selection, or at twice the selection's lines (+4): small models otherwise write on into new functions.
    const selectedLines = selected.split('\n').length;
    const task = startTask(this.engine, {
      priority: 1, prompt: ids, sharedPrefix: layout.ids.length, maxTokens, sampling: { temperature: 0 }, stopIds: s.stops, stop: [],
      rule: { kind: 'completion', suffix: after, linePrefix: indent, maxLines: 2 * selectedLines + 4, stopAtBlankLine: false },
      timeBoxMs: 0, stream: true,
    }, token, onDelta);
    const r = await task.result;
    if (r.finishReason === 'cancelled') throw rpc.cancelled();
    // The instruction is only a hint in the prompt: lines that merely repeat it do not belong in the code.
    const withoutHint = r.text.split('\n').filter((l) => l.trim() !== comment.trim()).join('\n');
    let replacement = cutAtSuffix(withoutHint.replace(/^\s*\n/, atLineStart ? '' : '\n'), after);
    // Keep the selection's line structure: a selection of whole lines is replaced by whole lines.
    if (selected.endsWith('\n') && replacement !== '' && !replacement.endsWith('\n')) replacement += '\n';
    const newText = text.slice(0, start) + replacement + after;
    const files: FileEdit[] = newText === text ? [] : [{ uri, baseHash: ws.hashOf(uri) ?? sha256(text), newText, blocks: [{ index: 0, match: 'exact' }] }];
    return { text: r.text, files, usage: { promptTokens: ids.length, completionTokens: r.generatedTokens, contextTokens: layout.ids.length }, rejected: [] };
  }

  /** "Write tests" for a FIM model: a new test file beside the source, written after it in the prompt. */
  private async newTestFile(
    ws: Workspace, uri: string, text: string, token: CancellationToken, onDelta: (t: string) => void, maxTokensParam: number | undefined,
  ): Promise<EditResult> {
    const p = uriToPath(uri)!;
    const ext = path.extname(p);
    const base = path.basename(p, ext);
    const testPath = path.join(path.dirname(p), `${base}.test${ext || '.ts'}`);
    const testUri = pathToUri(testPath);
    if (!ws.contains(testUri)) throw rpc.outside(`${testPath} would be outside the workspace`);
    const existing = ws.textOf(testUri);
    const header = `import { describe, it, expect } from 'vitest';\nimport * as subject from './${base}';\n\n`;
    const layout = this.ctx.layout(ws);
    const tok = this.ctx.tokenizer;
    const s = this.ctx.special;
    const own = [
      ...this.ctx.cache.fileBlock(ws.displayPath(uri), ws.hashOf(uri) ?? sha256(text), text),
      ...this.ctx.cache.header(ws.displayPath(testUri)),
      ...tok.encode(existing ?? header, { specials: 'plain' }),
    ];
    const ids = new Int32Array(layout.ids.length + own.length);
    ids.set(layout.ids);
    ids.set(own, layout.ids.length);
    if (ids.length >= this.contextWindow) throw rpc.overflow(`the prompt needs ${ids.length} tokens; the context window is ${this.contextWindow}`);
    const task = startTask(this.engine, {
      priority: 1, prompt: ids, sharedPrefix: layout.ids.length, maxTokens: Math.min(maxTokensParam ?? 384, this.contextWindow - ids.length),
      sampling: { temperature: 0 }, stopIds: s.stops, stop: [], rule: { kind: 'plain' }, timeBoxMs: 0, stream: true,
    }, token, onDelta);
    const r = await task.result;
    if (r.finishReason === 'cancelled') throw rpc.cancelled();
    const newText = (existing ?? header) + r.text.replace(/\s*$/, '\n');
    return {
      text: r.text,
      files: [{ uri: testUri, baseHash: existing !== null ? (ws.hashOf(testUri) ?? sha256(existing)) : sha256(''), newText, blocks: [{ index: 0, match: 'exact' }], create: existing === null }],
      usage: { promptTokens: ids.length, completionTokens: r.generatedTokens, contextTokens: layout.ids.length },
      rejected: [],
    };
  }

  /** Search/replace blocks from an instruction-following model (and explanations, for any model). */
  private async viaChat(
    ws: Workspace, params: EditParams, instruction: string, text: string, start: number, end: number,
    token: CancellationToken, onDelta: (t: string) => void,
  ): Promise<EditResult> {
    const uri = params.target.uri;
    const explain = params.kind === 'explain';
    const selected = text.slice(start, end);
    const ask = explain
      ? instruction
      : `${instruction}\nAnswer with search/replace blocks: the file path on its own line, then\n<<<<<<< SEARCH\n(exact lines now in the file)\n=======\n(the new lines)\n>>>>>>> REPLACE`;
    const layout = this.ctx.layout(ws);
    const maxTokens = params.maxTokens ?? (explain ? 512 : 1024);
    let prompt;
    try {
      prompt = chatPrompt(this.ctx.tokenizer, this.ctx.special, this.ctx.cache, layout, {
        messages: [{ role: 'user', content: ask }],
        extras: [{ title: `${ws.displayPath(uri)}${start === 0 && end === text.length ? '' : ' (selection)'}`, text: selected }],
        budget: this.contextWindow - maxTokens,
      });
    } catch (e) {
      if (e instanceof PromptError) throw rpc.overflow(e.message);
      throw e;
    }
    const s = this.ctx.special;
    const task = startTask(this.engine, {
      priority: 1, prompt: prompt.ids, sharedPrefix: prompt.sharedPrefix, maxTokens, sampling: { temperature: 0 }, stopIds: s.stops, stop: [],
      rule: { kind: 'plain' }, timeBoxMs: 0, stream: true,
    }, token, onDelta);
    const r = await task.result;
    if (r.finishReason === 'cancelled') throw rpc.cancelled();
    const usage = { promptTokens: prompt.ids.length, completionTokens: r.generatedTokens, contextTokens: prompt.sharedPrefix };
    if (explain) return { text: r.text, files: [], usage, rejected: [] };
    const parsed = parseEditBlocks(r.text);
    const rejected = parsed.problems.map((p) => ({ index: p.index, message: p.message }));
    const byUri = new Map<string, typeof parsed.blocks>();
    const folder = ws.folderOf(uri)!;
    for (const b of parsed.blocks) {
      const target = b.path === null ? uri : pathToUri(path.resolve(folder.fsPath, b.path));
      if (!ws.contains(target)) {
        rejected.push({ index: b.index, message: `${b.path} is outside the workspace` });
        continue;
      }
      byUri.set(target, [...(byUri.get(target) ?? []), b]);
    }
    const files: FileEdit[] = [];
    for (const [target, blocks] of byUri) {
      const base = ws.textOf(target);
      const applied = applyEditBlocks(base ?? '', blocks);
      files.push({ uri: target, baseHash: base === null ? sha256('') : (ws.hashOf(target) ?? sha256(base)), newText: applied.text, blocks: applied.reports, create: base === null });
    }
    return { text: r.text, files, usage, rejected };
  }
}

function commentFor(uri: string, text: string): string {
  const ext = path.extname(uri).toLowerCase();
  const hash = ['.py', '.sh', '.rb', '.yaml', '.yml', '.toml'].includes(ext);
  return `${hash ? '#' : '//'} ${text.replace(/\s+/g, ' ')}`;
}

/** Drops generated text from where it starts repeating the code after the selection. */
function cutAtSuffix(generated: string, after: string): string {
  const next = after.split('\n').map((l) => l.trim()).find((l) => l.length >= 4);
  if (!next) return generated;
  const lines = generated.split('\n');
  const i = lines.findIndex((l, k) => k > 0 && l.trim() === next);
  return i > 0 ? lines.slice(0, i).join('\n').replace(/\n+$/, after.startsWith('\n') ? '' : '\n') : generated;
}
