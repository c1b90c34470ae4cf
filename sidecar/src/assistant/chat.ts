// glance/chat: a conversation on top of the repository prefix (and the active document), streamed as deltas.

import type { CancellationToken } from 'vscode-languageserver/node';

import { chatPrompt, PromptError } from '../context/prompts';
import type { RepositoryContext } from '../context/repository';
import type { ChatParams, ChatResult } from '../protocol/index';
import type { EngineHost } from '../scheduler/engine-host';
import { rpc } from '../server/rpc-error';
import type { Workspace } from '../workspace/workspace';
import { streamScriptedChatAnswer, takeScriptedChatAnswer } from './scripted-chat';
import { startTask } from './tasks';

export const DEFAULT_CHAT_MAX_TOKENS = 512;

export class ChatService {
  constructor(private readonly ctx: RepositoryContext, private readonly engine: EngineHost, private readonly contextWindow: number) {}

  async chat(ws: Workspace, params: ChatParams, token: CancellationToken, onDelta: (text: string) => void): Promise<ChatResult> {
    const maxTokens = params.maxTokens ?? DEFAULT_CHAT_MAX_TOKENS;
    const extras: { title: string; text: string }[] = [];
    const sel = params.context?.selection;
    if (sel) extras.push({ title: `Selected in ${ws.displayPath(sel.uri)} (lines ${sel.range.start.line + 1}-${sel.range.end.line + 1})`, text: sel.text });
    for (const uri of params.context?.files ?? []) {
      if (!ws.contains(uri)) throw rpc.outside(`@file ${uri} is outside the workspace folders`);
      const text = ws.textOf(uri);
      if (text === null) throw rpc.unknownDocument(uri);
      extras.push({ title: `File ${ws.displayPath(uri)}`, text });
    }
    const scripted = takeScriptedChatAnswer(); // the e2e test's hook; null unless GLANCE_E2E_SCRIPTED_CHAT is set
    if (scripted !== null) {
      // {{context}} lets the test see which selection and @files reached the sidecar
      const text = scripted.replaceAll('{{context}}', extras.map((e) => e.title).join('; '));
      const r = await streamScriptedChatAnswer(text, token, onDelta);
      if (r.finishReason === 'cancelled') throw rpc.cancelled();
      return r;
    }
    const activeUri = params.context?.uri ?? ws.activeUri;
    const activeText = activeUri ? ws.textOf(activeUri) : null;
    this.ctx.touch(ws);
    const layout = this.ctx.layout(ws);
    let prompt;
    try {
      prompt = chatPrompt(this.ctx.tokenizer, this.ctx.special, this.ctx.cache, layout, {
        messages: params.messages,
        activeFile: activeUri && activeText !== null && activeUri === ws.activeUri
          ? { path: ws.displayPath(activeUri), hash: ws.hashOf(activeUri) ?? '', text: activeText }
          : undefined,
        extras,
        budget: this.contextWindow - maxTokens,
      });
    } catch (e) {
      if (e instanceof PromptError) throw rpc.overflow(e.message);
      throw e;
    }
    const task = startTask(
      this.engine,
      {
        priority: 1,
        prompt: prompt.ids,
        sharedPrefix: prompt.sharedPrefix,
        maxTokens,
        sampling: { temperature: 0.2, topP: 0.95, repetitionPenalty: 1.1 },
        stopIds: this.ctx.special.stops,
        stop: [],
        rule: { kind: 'plain' },
        timeBoxMs: 0,
        stream: true,
      },
      token,
      onDelta,
    );
    const r = await task.result;
    if (r.finishReason === 'cancelled' && token.isCancellationRequested) throw rpc.cancelled();
    return {
      text: r.text,
      finishReason: r.finishReason === 'cancelled' ? 'cancelled' : r.finishReason === 'eos' ? 'eos' : r.finishReason === 'stop' ? 'stop' : 'length',
      usage: { promptTokens: prompt.ids.length, completionTokens: r.generatedTokens, contextTokens: prompt.sharedPrefix },
    };
  }
}
