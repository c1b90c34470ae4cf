// Inline completion (ghost text) through the sidecar: adaptive debounce, cancellation that reaches the sidecar
// as $/cancelRequest, a cache with typed-ahead forwarding, and filters that drop what would repeat the document.
// Partial accept (word, line) is VS Code's own (editor.action.inlineSuggest.acceptNextWord / acceptNextLine).
import * as vscode from 'vscode';

import {
  InlineCompletionMethod,
  type InlineCompletionList,
  type InlineCompletionParams,
} from '../../../sidecar/src/protocol';
import { completionEnabledFor, readConfig } from '../config';
import { nextRequestId } from '../log';
import type { LastRequest } from '../status/format';
import type { SidecarSupervisor } from '../supervisor/supervisor';
import { CompletionCache } from './cache';
import { AdaptiveDebounce, sleepCancellable } from './debounce';
import { filterCompletion } from './filters';

/** How much text around the cursor keys the cache (enough to tell positions apart, cheap to compare). */
const CACHE_PREFIX_CHARS = 2000;
const CACHE_SUFFIX_CHARS = 400;

export class InlineCompletionProvider implements vscode.InlineCompletionItemProvider, vscode.Disposable {
  private readonly cache = new CompletionCache(100);
  private readonly debounce = new AdaptiveDebounce();
  private lastLatencyMs: number | null = null;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly supervisor: SidecarSupervisor,
    private readonly log: vscode.LogOutputChannel,
    private readonly onTiming: (last: LastRequest) => void,
  ) {
    this.disposables.push(
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (e.contentChanges.length > 0 && e.document === vscode.window.activeTextEditor?.document) {
          this.debounce.recordKeystroke(Date.now());
        }
      }),
      vscode.workspace.onDidCloseTextDocument((d) => this.cache.forget(d.uri.toString())),
    );
  }

  async provideInlineCompletionItems(
    document: vscode.TextDocument,
    position: vscode.Position,
    context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionList | null> {
    const config = readConfig();
    if (!completionEnabledFor(config, document.languageId)) return null;
    const client = this.supervisor.client;
    if (client === null) return null;

    // Bounded slices, never the whole document: this runs on every keystroke, and files can be large.
    const offset = document.offsetAt(position);
    const key = {
      uri: document.uri.toString(),
      prefix: document.getText(new vscode.Range(document.positionAt(Math.max(0, offset - CACHE_PREFIX_CHARS)), position)),
      suffix: document.getText(new vscode.Range(position, document.positionAt(offset + CACHE_SUFFIX_CHARS))),
    };
    const line = document.lineAt(position.line);
    const linePrefix = line.text.slice(0, position.character);
    const lineSuffix = line.text.slice(position.character);
    const followingLines: string[] = [];
    for (let l = position.line + 1; l < Math.min(document.lineCount, position.line + 6); l++) followingLines.push(document.lineAt(l).text);
    const show = (raw: string): vscode.InlineCompletionList | null => {
      const filtered = filterCompletion({ text: raw, linePrefix, lineSuffix, followingLines, maxLines: config.maxLines });
      if (filtered === null) return null;
      return new vscode.InlineCompletionList([new vscode.InlineCompletionItem(filtered, new vscode.Range(position, position))]);
    };

    const cached = this.cache.get(key);
    if (cached !== null) return show(cached);

    const automatic = context.triggerKind === vscode.InlineCompletionTriggerKind.Automatic;
    if (automatic) {
      const delay = this.debounce.delayMs(config.debounceMs, this.lastLatencyMs);
      const waited = await sleepCancellable(delay, (listener) => token.onCancellationRequested(listener));
      if (!waited || token.isCancellationRequested) return null;
    }

    const requestId = nextRequestId('cmpl');
    const params: InlineCompletionParams = {
      textDocument: { uri: document.uri.toString() },
      position: { line: position.line, character: position.character },
      context: { triggerKind: automatic ? 2 : 1 },
    };
    const started = Date.now();
    let list: InlineCompletionList | null;
    try {
      // The client turns the token's cancellation into $/cancelRequest, which stops the sidecar's decoding.
      list = await client.sendRequest<InlineCompletionList | null>(InlineCompletionMethod, params, token);
    } catch (e) {
      if (!token.isCancellationRequested) this.log.warn(`[${requestId}] completion failed: ${(e as Error).message}`);
      return null;
    }
    const elapsed = Date.now() - started;
    this.lastLatencyMs = elapsed;
    const timing = list?.glance;
    if (timing) {
      this.log.info(
        `[${requestId}] completion sidecar=${timing.requestId} ${timing.latencyMs} ms (round trip ${elapsed} ms), prompt ${timing.promptTokens} (+${timing.reusedTokens} cached), ${timing.generatedTokens} tokens at ${timing.tokensPerSecond.toFixed(1)}/s, stop ${timing.stopReason}`,
      );
      this.onTiming({ kind: 'completion', latencyMs: timing.latencyMs, tokensPerSecond: timing.tokensPerSecond });
    } else {
      this.log.info(`[${requestId}] completion ${elapsed} ms, ${list?.items.length ?? 0} items`);
    }
    const first = list?.items[0]?.insertText;
    if (first === undefined || token.isCancellationRequested) return null;
    this.cache.put(key, first);
    const shown = show(first);
    this.log.info(`[${requestId}] → ${JSON.stringify(first.slice(0, 80))}${shown ? '' : ' (not shown: empty or repeats the document)'}`);
    return shown;
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
  }
}
