// textDocument/inlineCompletion: fill-in-the-middle at the cursor on top of the repository prefix. The prompt keeps
// everything up to the cursor stable between keystrokes (the engine reuses it), generation stops at a sensible
// boundary or when the time box runs out, and a newer request for the same document replaces an older one.

import type { CancellationToken } from 'vscode-languageserver/node';

import { CompletionBoundary, finishCompletion } from '../completion/boundary';
import { completionPrompt, offsetAt, PromptError } from '../context/prompts';
import type { RepositoryContext } from '../context/repository';
import type { InlineCompletionList, InlineCompletionParams } from '../protocol/index';
import type { EngineHost } from '../scheduler/engine-host';
import { rpc } from '../server/rpc-error';
import type { Workspace } from '../workspace/workspace';
import { startTask } from './tasks';

export interface CompletionSettings {
  maxTokens: number;
  maxLines: number;
  timeBoxMs: number;
}

export const DEFAULT_COMPLETION_SETTINGS: CompletionSettings = { maxTokens: 96, maxLines: 8, timeBoxMs: 2000 };

export class CompletionService {
  /** the running completion per document: a newer one supersedes it */
  private readonly running = new Map<string, { taskId: number; superseded: boolean }>();

  constructor(private readonly ctx: RepositoryContext, private readonly engine: EngineHost, private readonly settings: CompletionSettings) {}

  async complete(ws: Workspace, params: InlineCompletionParams, token: CancellationToken, requestId: string): Promise<InlineCompletionList> {
    const t0 = Date.now();
    const uri = params.textDocument.uri;
    const text = ws.textOf(uri);
    if (text === null) throw rpc.unknownDocument(uri);
    const offset = offsetAt(text, params.position.line, params.position.character);
    if (offset === null) {
      throw rpc.invalidParams(`position ${params.position.line}:${params.position.character} is outside ${uri} (${text.split('\n').length} lines)`);
    }
    ws.setActive(uri);
    this.ctx.touch(ws);
    const full = this.ctx.layout(ws);
    // While the repository is still being indexed, complete on top of the part already computed.
    const computed = this.ctx.computedPrefix(ws);
    const layout = computed < full.ids.length ? { ...full, ids: full.ids.subarray(0, computed) } : full;
    let prompt;
    try {
      prompt = completionPrompt(this.ctx.tokenizer, this.ctx.special, this.ctx.cache, layout, ws.displayPath(uri), text, offset);
    } catch (e) {
      if (e instanceof PromptError) throw rpc.model(e.message);
      throw e;
    }
    const boundary = new CompletionBoundary({ suffix: prompt.suffix, linePrefix: prompt.linePrefix, maxLines: this.settings.maxLines });
    const key = `${ws.name}\n${uri}`;
    const older = this.running.get(key);
    if (older) {
      older.superseded = true;
      this.engine.cancel(older.taskId);
    }
    const task = startTask(
      this.engine,
      {
        priority: 0,
        prompt: prompt.ids,
        sharedPrefix: prompt.sharedPrefix,
        maxTokens: boundary.singleLine ? Math.min(48, this.settings.maxTokens) : this.settings.maxTokens,
        sampling: { temperature: 0 },
        stopIds: this.ctx.special.stops,
        stop: [],
        rule: { kind: 'completion', suffix: prompt.suffix, linePrefix: prompt.linePrefix, maxLines: this.settings.maxLines },
        timeBoxMs: this.settings.timeBoxMs,
        stream: false,
      },
      token,
    );
    const mine = { taskId: task.taskId, superseded: false };
    this.running.set(key, mine);
    try {
      const r = await task.result;
      if (token.isCancellationRequested) throw rpc.cancelled();
      if (mine.superseded) throw rpc.superseded();
      if (r.finishReason === 'cancelled') throw rpc.cancelled();
      // the answer continues the healed line prefix: drop the whitespace the user already typed
      const answer = prompt.heal && r.text.startsWith(prompt.heal) ? r.text.slice(prompt.heal.length) : r.text;
      const insertText = finishCompletion(answer, prompt.suffix, boundary.singleLine);
      const position = params.position;
      return {
        items: insertText ? [{ insertText, range: { start: position, end: position } }] : [],
        glance: {
          requestId,
          latencyMs: Date.now() - t0,
          promptTokens: r.promptComputed,
          reusedTokens: r.promptReused,
          generatedTokens: r.generatedTokens,
          tokensPerSecond: Math.round(r.tokensPerSecond * 10) / 10,
          stopReason: r.finishReason,
        },
      };
    } finally {
      if (this.running.get(key) === mine) this.running.delete(key);
    }
  }
}
