// The chat view (a webview view in Glance's activity-bar container): streamed answers with a stop button,
// history per workspace, the selection and `@file` mentions as context, code blocks with Copy / Insert / Apply,
// and a line saying how much of the repository the model sees. The webview script renders markdown.
import { randomBytes } from 'node:crypto';

import * as vscode from 'vscode';

import {
  ChatDeltaNotification,
  type ChatDeltaParams,
  type ChatContext,
  type ChatMessage,
  ChatMethod,
  type ChatParams,
  type ChatResult,
  type StatusResult,
} from '../../../sidecar/src/protocol';
import { nextRequestId } from '../log';
import type { LastRequest } from '../status/format';
import type { SidecarSupervisor } from '../supervisor/supervisor';
import { extractMentions, trimHistory } from './history';
import type { FromWebview, ToWebview } from './messages';

const HISTORY_KEY = 'glance.chat.history';
const MAX_HISTORY_MESSAGES = 40;

export class ChatViewProvider implements vscode.WebviewViewProvider, vscode.Disposable {
  static readonly viewId = 'glance.chat';
  private view: vscode.WebviewView | null = null;
  private running: { requestId: string; source: vscode.CancellationTokenSource } | null = null;
  private readonly disposables: vscode.Disposable[] = [];
  private contextLine = '';

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly state: vscode.Memento,
    private readonly supervisor: SidecarSupervisor,
    private readonly log: vscode.LogOutputChannel,
    private readonly onTiming: (last: LastRequest) => void,
    private readonly applyCode: (code: string) => Promise<void>,
  ) {}

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    const webviewRoot = vscode.Uri.joinPath(this.extensionUri, 'dist', 'webview');
    view.webview.options = { enableScripts: true, localResourceRoots: [webviewRoot] };
    view.webview.html = this.html(view.webview, webviewRoot);
    this.disposables.push(
      view.webview.onDidReceiveMessage((m: FromWebview) => void this.onMessage(m)),
      view.onDidDispose(() => {
        this.view = null;
      }),
    );
  }

  private html(webview: vscode.Webview, root: vscode.Uri): string {
    const nonce = randomBytes(16).toString('base64');
    const script = webview.asWebviewUri(vscode.Uri.joinPath(root, 'chat.js'));
    const style = webview.asWebviewUri(vscode.Uri.joinPath(root, 'chat.css'));
    const csp = [
      "default-src 'none'",
      `style-src ${webview.cspSource}`,
      `script-src 'nonce-${nonce}'`,
      `img-src ${webview.cspSource} data:`,
      `font-src ${webview.cspSource}`,
    ].join('; ');
    return `<!DOCTYPE html>
<html lang="en"><head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${style.toString()}">
<title>Glance Chat</title>
</head><body>
<div id="context" class="context" aria-live="polite"></div>
<div id="messages" class="messages" role="log" aria-live="polite"></div>
<form id="ask" class="ask">
  <textarea id="question" rows="3" placeholder="Ask about your code. @file.ts adds a file; the selection is included." aria-label="Question"></textarea>
  <div class="ask-buttons">
    <label class="selection-toggle"><input type="checkbox" id="useSelection" checked> selection</label>
    <button type="button" id="stop" class="stop" hidden>Stop</button>
    <button type="submit" id="send">Send</button>
  </div>
</form>
<script nonce="${nonce}" src="${script.toString()}"></script>
</body></html>`;
  }

  private post(message: ToWebview): void {
    void this.view?.webview.postMessage(message);
  }

  private history(): ChatMessage[] {
    return this.state.get<ChatMessage[]>(HISTORY_KEY, []);
  }

  private async saveHistory(messages: ChatMessage[]): Promise<void> {
    await this.state.update(HISTORY_KEY, trimHistory(messages, MAX_HISTORY_MESSAGES));
  }

  /** What the model sees, shown above the conversation. */
  setStatus(status: StatusResult | null): void {
    this.contextLine =
      status === null
        ? 'Glance is not connected.'
        : `The model sees ${status.files.inContext} of ${status.files.known} files (${status.contextTokens.toLocaleString('en-US')} tokens${status.files.skipped > 0 ? `, ${status.files.skipped} skipped` : ''}).`;
    this.post({ type: 'context', text: this.contextLine });
  }

  /** Shows a finished answer from elsewhere (the Explain command) as a turn. */
  async showExplanation(question: string, answer: string): Promise<void> {
    await vscode.commands.executeCommand(`${ChatViewProvider.viewId}.focus`);
    const messages = [...this.history(), { role: 'user' as const, content: question }, { role: 'assistant' as const, content: answer }];
    await this.saveHistory(messages);
    this.post({ type: 'history', messages: this.history() });
  }

  async clear(): Promise<void> {
    this.running?.source.cancel();
    await this.saveHistory([]);
    this.post({ type: 'history', messages: [] });
  }

  private async onMessage(m: FromWebview): Promise<void> {
    switch (m.type) {
      case 'ready':
        this.post({ type: 'history', messages: this.history() });
        this.post({ type: 'context', text: this.contextLine });
        return;
      case 'ask':
        await this.ask(m.text, m.useSelection);
        return;
      case 'stop':
        this.running?.source.cancel();
        return;
      case 'copy':
        await vscode.env.clipboard.writeText(m.code);
        void vscode.window.setStatusBarMessage('Glance: code copied', 2000);
        return;
      case 'insert': {
        const editor = vscode.window.activeTextEditor ?? vscode.window.visibleTextEditors[0];
        if (!editor) {
          void vscode.window.showWarningMessage('Glance: open an editor to insert the code into.');
          return;
        }
        await editor.edit((b) => b.replace(editor.selection, m.code));
        return;
      }
      case 'apply':
        await this.applyCode(m.code);
        return;
    }
  }

  private async ask(question: string, useSelection: boolean): Promise<void> {
    const text = question.trim();
    if (text === '') return;
    const client = this.supervisor.client;
    if (client === null) {
      this.post({ type: 'error', requestId: '', message: 'Glance is not connected to its sidecar yet (see the status bar).' });
      return;
    }
    this.running?.source.cancel();
    const requestId = nextRequestId('chat');
    const source = new vscode.CancellationTokenSource();
    this.running = { requestId, source };

    const context: ChatContext = {};
    const editor = vscode.window.activeTextEditor;
    if (editor) {
      context.uri = editor.document.uri.toString();
      if (useSelection && !editor.selection.isEmpty) {
        const s = editor.selection;
        context.selection = {
          uri: editor.document.uri.toString(),
          range: { start: { line: s.start.line, character: s.start.character }, end: { line: s.end.line, character: s.end.character } },
          text: editor.document.getText(s),
        };
      }
    }
    const mentions = extractMentions(text);
    if (mentions.length > 0) {
      const files: string[] = [];
      for (const mention of mentions) {
        const found = await vscode.workspace.findFiles(`**/${mention}`, '**/node_modules/**', 2);
        if (found[0]) files.push(found[0].toString());
        else this.post({ type: 'notice', message: `@${mention}: no such file in the workspace` });
      }
      if (files.length > 0) context.files = files;
    }

    const before = this.history();
    const messages: ChatMessage[] = [...before, { role: 'user', content: text }];
    await this.saveHistory(messages);
    this.post({ type: 'start', requestId, question: text });

    const sub = client.onNotification(ChatDeltaNotification, (p: ChatDeltaParams) => {
      if (p.requestId === requestId) this.post({ type: 'delta', requestId, text: p.text });
    });
    const started = Date.now();
    const params: ChatParams = { messages, requestId, context };
    try {
      const result = await client.sendRequest<ChatResult>(ChatMethod, params, source.token);
      const seconds = (Date.now() - started) / 1000;
      const tps = seconds > 0 ? result.usage.completionTokens / seconds : 0;
      this.log.info(
        `[${requestId}] chat ${Date.now() - started} ms, prompt ${result.usage.promptTokens}, context ${result.usage.contextTokens}, ${result.usage.completionTokens} tokens, ${result.finishReason}`,
      );
      this.onTiming({ kind: 'chat', latencyMs: Date.now() - started, tokensPerSecond: tps });
      await this.saveHistory([...messages, { role: 'assistant', content: result.text }]);
      this.post({ type: 'done', requestId, text: result.text, finishReason: result.finishReason, contextTokens: result.usage.contextTokens });
    } catch (e) {
      if (source.token.isCancellationRequested) {
        this.post({ type: 'done', requestId, text: null, finishReason: 'cancelled', contextTokens: 0 });
        this.log.info(`[${requestId}] chat stopped by the user`);
      } else {
        const message = (e as Error).message;
        this.log.warn(`[${requestId}] chat failed: ${message}`);
        this.post({ type: 'error', requestId, message });
      }
    } finally {
      sub.dispose();
      if (this.running?.requestId === requestId) this.running = null;
    }
  }

  dispose(): void {
    this.running?.source.cancel();
    for (const d of this.disposables) d.dispose();
  }
}
