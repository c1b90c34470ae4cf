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
import { type MentionCandidate, normalizeMention, resolveMention, splitFolderQualified } from './mentions';
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
    /** previews the code as an edit; resolves to the number of files offered */
    private readonly applyCode: (code: string) => Promise<number>,
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
        try {
          await vscode.env.clipboard.writeText(m.code);
          this.post({ type: 'actionDone', actionId: m.actionId, ok: true, label: 'Copied' });
        } catch (e) {
          this.log.warn(`copying a code block failed: ${(e as Error).message}`);
          this.post({ type: 'actionDone', actionId: m.actionId, ok: false, label: 'Copy failed' });
          void vscode.window.showErrorMessage(`Glance: could not copy to the clipboard: ${(e as Error).message}`);
        }
        return;
      case 'insert':
        this.post({ type: 'actionDone', actionId: m.actionId, ...(await this.insertAtCursor(m.code)) });
        return;
      case 'apply': {
        const offered = await this.applyCode(m.code);
        this.post({
          type: 'actionDone',
          actionId: m.actionId,
          ok: offered > 0,
          label: offered > 0 ? `Review the diff${offered > 1 ? `s (${offered} files)` : ''}` : 'Nothing applied',
        });
        return;
      }
    }
  }

  /** Insert at cursor: replaces the selection of the editor last used (the chat view has the focus now). */
  private async insertAtCursor(code: string): Promise<{ ok: boolean; label: string }> {
    const editor = vscode.window.activeTextEditor ?? vscode.window.visibleTextEditors[0];
    if (!editor) {
      void vscode.window.showWarningMessage('Glance: open an editor to insert the code into.');
      return { ok: false, label: 'No editor open' };
    }
    const ok = await editor.edit((b) => {
      for (const selection of editor.selections) b.replace(selection, code);
    });
    if (!ok) {
      void vscode.window.showErrorMessage(`Glance: ${vscode.workspace.asRelativePath(editor.document.uri)} did not accept the insertion (read-only?).`);
      return { ok: false, label: 'Insert failed' };
    }
    // back to the editor, so typing goes on where the code went in
    await vscode.window.showTextDocument(editor.document, { viewColumn: editor.viewColumn, preserveFocus: false });
    return { ok: true, label: `Inserted into ${vscode.workspace.asRelativePath(editor.document.uri, false)}` };
  }

  /** `@path` mentions → file URIs, across every workspace folder; unresolved ones are told in the conversation. */
  private async resolveMentions(mentions: string[]): Promise<{ uris: string[]; names: string[] }> {
    const folders = vscode.workspace.workspaceFolders ?? [];
    const uris: string[] = [];
    const names: string[] = [];
    for (const mention of mentions) {
      const candidates: MentionCandidate[] = [];
      const add = async (folder: vscode.WorkspaceFolder, glob: string): Promise<void> => {
        for (const uri of await vscode.workspace.findFiles(new vscode.RelativePattern(folder, glob), '**/node_modules/**', 20)) {
          const relativePath = uri.path.slice(folder.uri.path.replace(/\/$/, '').length + 1);
          candidates.push({ folder: folder.name, relativePath, uri: uri.toString() });
        }
      };
      for (const folder of folders) await add(folder, `**/${normalizeMention(mention)}`); // a glob reads a backslash as an escape
      const qualified = splitFolderQualified(mention, folders.map((f) => f.name));
      const named = qualified ? folders.find((f) => f.name === qualified.folder) : undefined;
      if (qualified && named) await add(named, qualified.rest);
      const r = resolveMention(mention, folders.length, candidates);
      if (r.kind === 'file') {
        if (!uris.includes(r.uri)) {
          uris.push(r.uri);
          names.push(r.display);
        }
      } else if (r.kind === 'ambiguous') {
        this.post({ type: 'notice', message: `@${mention} matches ${r.options.length} files; write one of ${r.options.map((o) => `@${o}`).join(', ')}` });
      } else {
        this.post({ type: 'notice', message: `@${mention}: no such file in the workspace${folders.length > 1 ? `'s ${folders.length} folders` : ''}` });
      }
    }
    return { uris, names };
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
    /** what goes along with the question, shown under it */
    const contextNames: string[] = [];
    const editor = vscode.window.activeTextEditor;
    if (editor) {
      context.uri = editor.document.uri.toString();
      if (useSelection && !editor.selection.isEmpty) {
        const s = editor.selection;
        contextNames.push(`selection in ${vscode.workspace.asRelativePath(editor.document.uri)} (lines ${s.start.line + 1}-${s.end.line + 1})`);
        context.selection = {
          uri: editor.document.uri.toString(),
          range: { start: { line: s.start.line, character: s.start.character }, end: { line: s.end.line, character: s.end.character } },
          text: editor.document.getText(s),
        };
      }
    }
    const mentions = extractMentions(text);
    if (mentions.length > 0) {
      const { uris, names } = await this.resolveMentions(mentions);
      if (uris.length > 0) context.files = uris;
      contextNames.push(...names);
    }

    const before = this.history();
    const messages: ChatMessage[] = [...before, { role: 'user', content: text }];
    await this.saveHistory(messages);
    this.post({ type: 'start', requestId, question: text, context: contextNames });

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
