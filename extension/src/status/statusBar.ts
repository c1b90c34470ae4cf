// The status bar item: supervisor state (starting / restarting / error), then the sidecar's own state
// (loading / indexing n% / ready), device, model, repository tokens in context, last latency and tokens/s.
import * as vscode from 'vscode';

import type { StatusResult } from '../../../sidecar/src/protocol';
import type { SupervisorState } from '../supervisor/supervisor';
import { formatStatus, type LastRequest } from './format';

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private supervisor: SupervisorState = { kind: 'stopped' };
  private sidecar: StatusResult | null = null;
  private last: LastRequest | null = null;
  private completionsOn = true;

  constructor() {
    this.item = vscode.window.createStatusBarItem('glance.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'Glance';
    this.item.command = 'glance.statusMenu';
    this.render();
    this.item.show();
  }

  setSupervisorState(state: SupervisorState): void {
    this.supervisor = state;
    if (state.kind !== 'connected') this.sidecar = null;
    this.render();
  }

  setSidecarStatus(status: StatusResult): void {
    this.sidecar = status;
    this.render();
  }

  setLastRequest(last: LastRequest): void {
    this.last = last;
    this.render();
  }

  setCompletionsEnabled(on: boolean): void {
    this.completionsOn = on;
    this.render();
  }

  private render(): void {
    const view = formatStatus(this.supervisor, this.sidecar, this.last, this.completionsOn);
    this.item.text = view.text;
    this.item.tooltip = new vscode.MarkdownString(view.tooltip);
    this.item.accessibilityInformation = { label: `Glance status: ${view.label}`, role: 'button' };
    this.item.backgroundColor =
      view.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : view.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
