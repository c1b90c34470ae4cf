// Refactor commands (Edit Selection…, Explain, Add Types, Add Docs, Write Tests, Fix Problems) and Apply from
// chat: ask the sidecar (or apply search/replace blocks locally), then preview the result as diffs.
import * as vscode from 'vscode';

import { applyEditBlocks, parseEditBlocks } from '../../../sidecar/src/edits';
import {
  EditDeltaNotification,
  type EditDeltaParams,
  type EditDiagnostic,
  type EditKind,
  EditMethod,
  type EditParams,
  type EditResult,
  type FileEdit,
} from '../../../sidecar/src/protocol';
import { nextRequestId } from '../log';
import type { LastRequest } from '../status/format';
import type { SidecarSupervisor } from '../supervisor/supervisor';
import { contentHash } from '../sync/fileRules';
import type { EditProposals } from './proposals';

const TITLES: Record<EditKind, string> = {
  edit: 'Edit Selection',
  explain: 'Explain',
  types: 'Add Types',
  docs: 'Add Docs',
  tests: 'Write Tests',
  fix: 'Fix Problems',
};

const SEVERITY: Record<number, EditDiagnostic['severity']> = {
  [vscode.DiagnosticSeverity.Error]: 'error',
  [vscode.DiagnosticSeverity.Warning]: 'warning',
  [vscode.DiagnosticSeverity.Information]: 'info',
  [vscode.DiagnosticSeverity.Hint]: 'hint',
};

export class EditCommands {
  constructor(
    private readonly supervisor: SidecarSupervisor,
    private readonly proposals: EditProposals,
    private readonly log: vscode.LogOutputChannel,
    private readonly showExplanation: (question: string, answer: string) => Promise<void>,
    private readonly onTiming: (last: LastRequest) => void,
  ) {}

  async run(kind: EditKind): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      void vscode.window.showWarningMessage(`Glance: open a file to use ${TITLES[kind]}.`);
      return;
    }
    const client = this.supervisor.client;
    if (client === null) {
      void vscode.window.showWarningMessage('Glance is not connected to its sidecar yet (see the status bar).');
      return;
    }
    let instruction: string | undefined;
    if (kind === 'edit') {
      instruction = await vscode.window.showInputBox({
        title: 'Glance: Edit Selection',
        prompt: editor.selection.isEmpty ? 'How should this file change?' : 'How should the selection change?',
        placeHolder: 'e.g. handle the empty case, use async/await, rename x to count',
        ignoreFocusOut: true,
      });
      if (instruction === undefined || instruction.trim() === '') return;
    }
    const document = editor.document;
    const selection = editor.selection;
    const range = selection.isEmpty
      ? undefined
      : { start: { line: selection.start.line, character: selection.start.character }, end: { line: selection.end.line, character: selection.end.character } };
    const diagnostics: EditDiagnostic[] | undefined =
      kind === 'fix'
        ? vscode.languages
            .getDiagnostics(document.uri)
            .filter((d) => selection.isEmpty || d.range.intersection(selection) !== undefined)
            .map((d) => ({
              uri: document.uri.toString(),
              range: { start: { line: d.range.start.line, character: d.range.start.character }, end: { line: d.range.end.line, character: d.range.end.character } },
              severity: SEVERITY[d.severity] ?? 'error',
              message: d.message,
            }))
        : undefined;
    if (kind === 'fix' && diagnostics?.length === 0) {
      void vscode.window.showInformationMessage('Glance: no problems reported here to fix.');
      return;
    }
    const requestId = nextRequestId('edit');
    const params: EditParams = {
      kind,
      target: { uri: document.uri.toString(), ...(range ? { range } : {}) },
      requestId,
      ...(instruction !== undefined ? { instruction: instruction.trim() } : {}),
      ...(diagnostics ? { diagnostics } : {}),
    };
    const started = Date.now();
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Glance: ${TITLES[kind]}`, cancellable: true },
      async (progress, token): Promise<EditResult | null> => {
        let received = 0;
        const sub = client.onNotification(EditDeltaNotification, (p: EditDeltaParams) => {
          if (p.requestId !== requestId) return;
          received += p.text.length;
          progress.report({ message: `writing… ${received} characters` });
        });
        try {
          progress.report({ message: 'thinking…' });
          return await client.sendRequest<EditResult>(EditMethod, params, token);
        } catch (e) {
          if (token.isCancellationRequested) {
            this.log.info(`[${requestId}] ${kind} cancelled`);
          } else {
            this.log.warn(`[${requestId}] ${kind} failed: ${(e as Error).message}`);
            void vscode.window.showErrorMessage(`Glance: ${TITLES[kind]} failed: ${(e as Error).message}`, 'Show Logs').then((c) => {
              if (c) this.log.show();
            });
          }
          return null;
        } finally {
          sub.dispose();
        }
      },
    );
    if (result === null) return;
    const elapsed = Date.now() - started;
    this.log.info(`[${requestId}] ${kind}: ${elapsed} ms, ${result.usage.completionTokens} tokens, ${result.files.length} file(s)`);
    this.onTiming({ kind: 'edit', latencyMs: elapsed, tokensPerSecond: elapsed > 0 ? (1000 * result.usage.completionTokens) / elapsed : 0 });

    if (kind === 'explain') {
      const what = range ? `the selection in ${vscode.workspace.asRelativePath(document.uri)}` : vscode.workspace.asRelativePath(document.uri);
      await this.showExplanation(`Explain ${what}`, result.text);
      return;
    }
    if (result.files.length === 0) {
      const why = result.rejected.map((r) => r.message).join('; ');
      void vscode.window.showWarningMessage(`Glance: ${TITLES[kind]} proposed no changes${why ? ` (${why})` : ''}.`);
      return;
    }
    await this.proposals.propose(result, TITLES[kind]);
  }

  /**
   * Apply from a chat code block: search/replace blocks are applied to the files they name (locally, with the
   * same applier as the sidecar); plain code replaces the active editor's selection (or goes in at the cursor).
   */
  async applyCode(code: string): Promise<number> {
    const parsed = parseEditBlocks(code);
    const editor = vscode.window.activeTextEditor ?? vscode.window.visibleTextEditors[0];
    const files: FileEdit[] = [];
    const rejected: EditResult['rejected'] = parsed.problems.map((p) => ({ index: p.index, message: p.message }));
    if (parsed.blocks.length > 0) {
      const byPath = new Map<string, typeof parsed.blocks>();
      for (const b of parsed.blocks) {
        const key = b.path ?? (editor ? editor.document.uri.toString() : '');
        byPath.set(key, [...(byPath.get(key) ?? []), b]);
      }
      for (const [p, blocks] of byPath) {
        const uri = await this.resolveWorkspacePath(p);
        if (uri === null) {
          for (const b of blocks) rejected.push({ index: b.index, message: `${p || '(no path)'}: not a file in the workspace` });
          continue;
        }
        let text = '';
        let create = false;
        try {
          text = (await vscode.workspace.openTextDocument(uri)).getText();
        } catch {
          create = true;
        }
        const applied = applyEditBlocks(text, blocks);
        files.push({ uri: uri.toString(), baseHash: contentHash(text), newText: applied.text, blocks: applied.reports, ...(create ? { create } : {}) });
      }
    } else {
      if (!editor) {
        void vscode.window.showWarningMessage('Glance: open the file to apply the code to.');
        return 0;
      }
      const d = editor.document;
      const text = d.getText();
      const start = d.offsetAt(editor.selection.start);
      const end = d.offsetAt(editor.selection.end);
      const newText = text.slice(0, start) + code + text.slice(end);
      files.push({ uri: d.uri.toString(), baseHash: contentHash(text), newText, blocks: [{ index: 0, match: 'exact' }] });
    }
    return this.proposals.propose({ text: code, files, usage: { promptTokens: 0, completionTokens: 0, contextTokens: 0 }, rejected }, 'Apply');
  }

  private async resolveWorkspacePath(p: string): Promise<vscode.Uri | null> {
    if (p.includes('://')) {
      const uri = vscode.Uri.parse(p);
      return vscode.workspace.getWorkspaceFolder(uri) ? uri : null;
    }
    const folders = vscode.workspace.workspaceFolders ?? [];
    const clean = p.replace(/^\.?\//, '');
    for (const f of folders) {
      const candidate = vscode.Uri.joinPath(f.uri, clean);
      try {
        await vscode.workspace.fs.stat(candidate);
        return candidate;
      } catch {
        // not in this folder
      }
    }
    // A new file goes into the first folder (multi-root: the one whose name prefixes the path, if any).
    const named = folders.find((f) => clean.startsWith(`${f.name}/`));
    if (named) return vscode.Uri.joinPath(named.uri, clean.slice(named.name.length + 1));
    const first = folders[0];
    if (!first || clean.split('/').includes('..')) return null;
    return vscode.Uri.joinPath(first.uri, clean);
  }
}
