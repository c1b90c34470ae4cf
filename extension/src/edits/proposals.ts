// Proposed edits: each file's new text is a virtual document (scheme glance-proposed) shown with vscode.diff
// against the file; Accept / Reject per file (diff editor title buttons) and for all (notification, palette).
// Accepted edits land as one WorkspaceEdit (one undo step), only inside the workspace, and only onto the text
// they were computed against (baseHash), then are saved.
import * as path from 'node:path';

import * as vscode from 'vscode';

import type { EditResult, FileEdit } from '../../../sidecar/src/protocol';
import { contentHash } from '../sync/fileRules';
import { summariseReports } from './summary';

export const PROPOSED_SCHEME = 'glance-proposed';

interface Pending {
  target: vscode.Uri;
  proposed: vscode.Uri;
  edit: FileEdit;
  /** which propose() call offered it: a notification's buttons act on their own batch only */
  batch: number;
}

export class EditProposals implements vscode.TextDocumentContentProvider, vscode.Disposable {
  private readonly pending = new Map<string, Pending>();
  private readonly changeEmitter = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changeEmitter.event;
  private readonly registration: vscode.Disposable;
  private batch = 0;

  constructor(private readonly log: vscode.LogOutputChannel) {
    this.registration = vscode.workspace.registerTextDocumentContentProvider(PROPOSED_SCHEME, this);
  }

  provideTextDocumentContent(uri: vscode.Uri): string {
    if (uri.query === 'empty') return '';
    for (const p of this.pending.values()) if (p.proposed.toString() === uri.toString()) return p.edit.newText;
    return '';
  }

  get count(): number {
    return this.pending.size;
  }

  /** Shows the result's file edits as diffs; returns how many were offered. */
  async propose(result: EditResult, title: string): Promise<number> {
    const batch = ++this.batch;
    const offered: Pending[] = [];
    const refused: string[] = [];
    for (const edit of result.files) {
      const target = vscode.Uri.parse(edit.uri);
      if (target.scheme !== 'file' || vscode.workspace.getWorkspaceFolder(target) === undefined) {
        refused.push(`${edit.uri}: outside the workspace`);
        continue;
      }
      const proposed = vscode.Uri.from({
        scheme: PROPOSED_SCHEME,
        path: target.path,
        query: `batch=${batch}`,
      });
      const entry: Pending = { target, proposed, edit, batch };
      const replaced = this.pending.get(target.toString());
      if (replaced) await this.closeDiffs([replaced]); // a newer proposal for the same file supersedes it
      this.pending.set(target.toString(), entry);
      this.changeEmitter.fire(proposed);
      offered.push(entry);
    }
    for (const r of result.rejected) refused.push(`block ${r.index + 1}: ${r.message}`);
    const summary = summariseReports(result.files);
    this.log.info(`${title}: ${offered.length} file(s) proposed; ${summary.text}${refused.length ? `; refused: ${refused.join('; ')}` : ''}`);
    if (summary.failed > 0 || refused.length > 0) {
      void vscode.window.showWarningMessage(
        `Glance: ${summary.text}${refused.length ? `; ${refused.length} refused (${refused[0]})` : ''}`,
      );
    }
    await this.updateContext();
    for (const entry of offered) {
      const left = entry.edit.create ? entry.proposed.with({ query: 'empty' }) : entry.target;
      const name = path.basename(entry.target.fsPath);
      await vscode.commands.executeCommand('vscode.diff', left, entry.proposed, `${name} ↔ Glance: ${title}`, { preview: false });
    }
    if (offered.length > 0) {
      void vscode.window
        .showInformationMessage(`Glance proposes changes to ${offered.length} file(s).`, 'Accept All', 'Reject All')
        .then((choice) => {
          // Only this batch's edits that are still pending (an older notification must not accept newer edits).
          const mine = [...this.pending.values()].filter((p) => p.batch === batch);
          if (choice === 'Accept All') void this.apply(mine);
          if (choice === 'Reject All') void this.reject(mine);
        });
    }
    return offered.length;
  }

  /** The pending edit shown in the active diff editor (its right side), if any. */
  private activePending(uri?: vscode.Uri): Pending | undefined {
    const candidate = uri ?? vscode.window.activeTextEditor?.document.uri;
    if (!candidate) return undefined;
    if (candidate.scheme === PROPOSED_SCHEME) {
      for (const p of this.pending.values()) if (p.proposed.path === candidate.path) return p;
    }
    return this.pending.get(candidate.toString());
  }

  async acceptFile(uri?: vscode.Uri): Promise<void> {
    const p = this.activePending(uri);
    if (!p) {
      void vscode.window.showInformationMessage('Glance: no proposed edit for this editor.');
      return;
    }
    await this.apply([p]);
  }

  async rejectFile(uri?: vscode.Uri): Promise<void> {
    const p = this.activePending(uri);
    if (p) await this.reject([p]);
  }

  async acceptAll(): Promise<void> {
    await this.apply([...this.pending.values()]);
  }

  async rejectAll(): Promise<void> {
    await this.reject([...this.pending.values()]);
  }

  private async reject(entries: Pending[]): Promise<void> {
    for (const p of entries) this.pending.delete(p.target.toString());
    await this.closeDiffs(entries);
    await this.updateContext();
  }

  /** One WorkspaceEdit for all given files; refuses (and applies nothing) if any file changed since. */
  private async apply(entries: Pending[]): Promise<boolean> {
    if (entries.length === 0) return false;
    const edit = new vscode.WorkspaceEdit();
    const documents: vscode.TextDocument[] = [];
    for (const p of entries) {
      if (vscode.workspace.getWorkspaceFolder(p.target) === undefined) {
        void vscode.window.showErrorMessage(`Glance: refusing to edit ${p.target.fsPath}: it is outside the workspace.`);
        return false;
      }
      let document: vscode.TextDocument | null = null;
      try {
        document = await vscode.workspace.openTextDocument(p.target);
      } catch {
        document = null;
      }
      if (document === null) {
        if (!p.edit.create) {
          void vscode.window.showErrorMessage(`Glance: ${p.target.fsPath} no longer exists; the edit was not applied.`);
          return false;
        }
        edit.createFile(p.target, { ignoreIfExists: false, contents: new TextEncoder().encode(p.edit.newText) });
        continue;
      }
      const current = contentHash(document.getText());
      if (current !== p.edit.baseHash) {
        void vscode.window.showErrorMessage(
          `Glance: ${vscode.workspace.asRelativePath(p.target)} changed since the edit was proposed; nothing was applied. Run the command again.`,
        );
        return false;
      }
      const full = new vscode.Range(document.positionAt(0), document.positionAt(document.getText().length));
      edit.replace(p.target, full, p.edit.newText);
      documents.push(document);
    }
    const ok = await vscode.workspace.applyEdit(edit);
    if (!ok) {
      void vscode.window.showErrorMessage('Glance: VS Code refused the edit; nothing was applied.');
      return false;
    }
    for (const d of documents) await d.save();
    for (const p of entries) this.pending.delete(p.target.toString());
    this.log.info(`applied edits to ${entries.map((p) => vscode.workspace.asRelativePath(p.target)).join(', ')}`);
    await this.closeDiffs(entries);
    await this.updateContext();
    return true;
  }

  private async closeDiffs(entries: Pending[]): Promise<void> {
    const proposed = new Set(entries.map((p) => p.proposed.toString()));
    const tabs: vscode.Tab[] = [];
    for (const group of vscode.window.tabGroups.all) {
      for (const tab of group.tabs) {
        if (tab.input instanceof vscode.TabInputTextDiff && proposed.has(tab.input.modified.toString())) tabs.push(tab);
      }
    }
    if (tabs.length > 0) await vscode.window.tabGroups.close(tabs);
  }

  private async updateContext(): Promise<void> {
    await vscode.commands.executeCommand('setContext', 'glance.hasPendingEdits', this.pending.size > 0);
  }

  dispose(): void {
    this.registration.dispose();
    this.changeEmitter.dispose();
  }
}
