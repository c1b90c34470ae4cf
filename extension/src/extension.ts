// Activation: wires the supervisor (sidecar process + language client), the status bar, workspace sync,
// inline completion, the chat view, and the refactor commands. No model code runs here.
import * as fs from 'node:fs';

import * as vscode from 'vscode';
import type { LanguageClient } from 'vscode-languageclient/node';

import { StatusChangedNotification, StatusMethod, type StatusResult } from '../../sidecar/src/protocol';
import { ChatViewProvider } from './chat/chatView';
import { readConfig } from './config';
import { EditCommands } from './edits/commands';
import { EditProposals } from './edits/proposals';
import { InlineCompletionProvider } from './completion/provider';
import { StatusBar } from './status/statusBar';
import { RemoteTokenStore } from './supervisor/remoteToken';
import { SET_REMOTE_TOKEN_COMMAND, SET_REMOTE_TOKEN_TITLE } from './supervisor/remoteTokenCommand';
import { SidecarSupervisor, type SupervisorState } from './supervisor/supervisor';
import { WorkspaceSync } from './sync/workspaceSync';

let supervisor: SidecarSupervisor | null = null;

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('Glance', { log: true });
  context.subscriptions.push(log);
  log.info(`Glance ${String(context.extension.packageJSON.version)} activating in ${vscode.env.appName} ${vscode.version}`);

  const remoteToken = new RemoteTokenStore(context.secrets, log);
  void remoteToken.migrateFromSettings(); // a token left in settings moves into secret storage before the first connect
  const version = String(context.extension.packageJSON.version);
  const sup = new SidecarSupervisor(context.extensionPath, context.globalStorageUri.fsPath, log, remoteToken, version);
  supervisor = sup;
  const statusBar = new StatusBar();
  statusBar.setCompletionsEnabled(readConfig().completionEnabled);
  const onTiming = statusBar.setLastRequest.bind(statusBar);
  const proposals = new EditProposals(log);
  const sync = new WorkspaceSync(sup, log, () => readConfig().maxFileBytes);
  let edits: EditCommands | null = null;
  const chat = new ChatViewProvider(context.extensionUri, context.workspaceState, sup, log, onTiming, (code) =>
    edits ? edits.applyCode(code) : Promise.resolve(0),
  );
  edits = new EditCommands(sup, proposals, log, (q, a) => chat.showExplanation(q, a), onTiming);
  const completion = new InlineCompletionProvider(sup, log, onTiming);
  context.subscriptions.push(sup, statusBar, proposals, sync, chat, completion);

  const probe = e2eProbe();
  sup.onDidChangeState((state) => {
    statusBar.setSupervisorState(state);
    if (state.kind !== 'connected') chat.setStatus(null);
    probe?.({ state: state.kind, pid: sup.sidecarPid });
  });
  sup.onDidChangeClient((client) => {
    if (client) void onConnected(client);
  });

  async function onConnected(client: LanguageClient): Promise<void> {
    const show = (status: StatusResult): void => {
      statusBar.setSidecarStatus(status);
      chat.setStatus(status);
      probe?.({ state: sup.state.kind, sidecarState: status.state, pid: sup.sidecarPid });
    };
    context.subscriptions.push(client.onNotification(StatusChangedNotification, show));
    try {
      show(await client.sendRequest<StatusResult>(StatusMethod, {}));
    } catch (e) {
      log.warn(`glance/status failed: ${(e as Error).message}`);
    }
    sync.fullScan('connected');
  }

  context.subscriptions.push(
    vscode.languages.registerInlineCompletionItemProvider([{ scheme: 'file' }, { scheme: 'untitled' }], completion),
    vscode.window.registerWebviewViewProvider(ChatViewProvider.viewId, chat, { webviewOptions: { retainContextWhenHidden: true } }),
    vscode.commands.registerCommand('glance.editSelection', () => edits?.run('edit')),
    vscode.commands.registerCommand('glance.explain', () => edits?.run('explain')),
    vscode.commands.registerCommand('glance.addTypes', () => edits?.run('types')),
    vscode.commands.registerCommand('glance.addDocs', () => edits?.run('docs')),
    vscode.commands.registerCommand('glance.writeTests', () => edits?.run('tests')),
    vscode.commands.registerCommand('glance.fixProblems', () => edits?.run('fix')),
    vscode.commands.registerCommand('glance.acceptAllEdits', () => proposals.acceptAll()),
    vscode.commands.registerCommand('glance.rejectAllEdits', () => proposals.rejectAll()),
    vscode.commands.registerCommand('glance.acceptFileEdit', (uri?: vscode.Uri) => proposals.acceptFile(uri)),
    vscode.commands.registerCommand('glance.rejectFileEdit', (uri?: vscode.Uri) => proposals.rejectFile(uri)),
    vscode.commands.registerCommand('glance.showLogs', () => log.show()),
    vscode.commands.registerCommand(SET_REMOTE_TOKEN_COMMAND, async () => {
      if (!(await remoteToken.promptAndStore())) return;
      if (readConfig().remoteUrl !== '') await sup.restart(); // reconnect with the new token
      else void vscode.window.showInformationMessage('Glance: token stored. Set glance.remote.url to connect to the remote sidecar.');
    }),
    vscode.commands.registerCommand('glance.restartSidecar', () => sup.restart()),
    vscode.commands.registerCommand('glance.clearChat', () => chat.clear()),
    vscode.commands.registerCommand('glance.openSettings', () => vscode.commands.executeCommand('workbench.action.openSettings', '@ext:glance.glance')),
    vscode.commands.registerCommand('glance.toggleCompletions', async () => {
      const on = !readConfig().completionEnabled;
      await vscode.workspace.getConfiguration('glance').update('completion.enabled', on, vscode.ConfigurationTarget.Global);
      statusBar.setCompletionsEnabled(on);
      void vscode.window.setStatusBarMessage(`Glance: inline completions ${on ? 'on' : 'off'}`, 2500);
    }),
    vscode.commands.registerCommand('glance.statusMenu', () => statusMenu(sup.state)),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('glance.completion.enabled')) statusBar.setCompletionsEnabled(readConfig().completionEnabled);
      // a token pasted into settings moves to secret storage (its removal from settings fires this again: a no-op)
      if (e.affectsConfiguration('glance.remote.token')) {
        void remoteToken.migrateFromSettings().then((moved) => {
          // a remote that failed for want of a token gets another try with it
          if (moved && readConfig().remoteUrl !== '' && sup.state.kind === 'error') void sup.restart();
        });
      }
      if (['glance.model.path', 'glance.device', 'glance.remote.url', 'glance.gpuMemoryGiB'].some((k) => e.affectsConfiguration(k))) {
        void vscode.window.showInformationMessage('Glance: restart the sidecar to use the new settings?', 'Restart').then((c) => {
          if (c) void sup.restart();
        });
      }
    }),
  );

  sup.start();
}

async function statusMenu(state: SupervisorState): Promise<void> {
  const on = readConfig().completionEnabled;
  const items: (vscode.QuickPickItem & { command: string })[] = [
    { label: '$(output) Show Logs', command: 'glance.showLogs' },
    { label: '$(debug-restart) Restart Sidecar', command: 'glance.restartSidecar' },
    { label: on ? '$(circle-slash) Turn Inline Completions Off' : '$(check) Turn Inline Completions On', command: 'glance.toggleCompletions' },
    { label: '$(gear) Open Settings', command: 'glance.openSettings' },
  ];
  const detail =
    state.kind === 'error' ? `${state.message}. ${state.advice}` : state.kind === 'connected' ? `connected (${state.origin})` : state.kind;
  if (state.kind === 'error' && state.tokenProblem) items.unshift({ label: `$(key) ${SET_REMOTE_TOKEN_TITLE}`, command: SET_REMOTE_TOKEN_COMMAND });
  const pick = await vscode.window.showQuickPick(items, { title: `Glance: ${detail}`, placeHolder: 'Glance' });
  if (pick) await vscode.commands.executeCommand(pick.command);
}

/** For the end-to-end test only: GLANCE_E2E_PROBE names a file that gets the supervisor state as JSON. */
function e2eProbe(): ((info: Record<string, unknown>) => void) | null {
  const file = process.env.GLANCE_E2E_PROBE;
  if (!file) return null;
  return (info) => {
    try {
      fs.writeFileSync(file, JSON.stringify({ ...info, at: new Date().toISOString() }));
    } catch {
      // the test reads what it can
    }
  };
}

export function deactivate(): void {
  supervisor?.dispose();
  supervisor = null;
}
