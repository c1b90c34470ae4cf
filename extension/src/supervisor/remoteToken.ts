// The remote sidecar's bearer token lives in VS Code's SecretStorage ("Glance: Set Remote Sidecar Token"), never
// in settings, which are plain text and often synced or committed. A token found in glance.remote.token (older
// versions, or a user pasting it there) is moved into SecretStorage, removed from settings, and the user is told.
import * as vscode from 'vscode';

import { SET_REMOTE_TOKEN_PALETTE_NAME } from './remoteTokenCommand';
import { type TokenSettingScope, planTokenMigration } from './tokenMigration';

const SECRET_KEY = 'glance.remote.token';

/** Each settings scope that can hold the token: where to clear it, and its name as the Settings editor shows it. */
const SETTING_SCOPES: Record<TokenSettingScope, { target: vscode.ConfigurationTarget; name: string }> = {
  global: { target: vscode.ConfigurationTarget.Global, name: 'user' },
  workspace: { target: vscode.ConfigurationTarget.Workspace, name: 'workspace' },
  workspaceFolder: { target: vscode.ConfigurationTarget.WorkspaceFolder, name: 'folder' },
};

export class RemoteTokenStore {
  /** a migration in progress: readers wait for it, so a restart right after a settings edit sees the token */
  private migration: Promise<void> = Promise.resolve();

  constructor(
    private readonly secrets: vscode.SecretStorage,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  async get(): Promise<string> {
    await this.migration;
    return ((await this.secrets.get(SECRET_KEY)) ?? '').trim();
  }

  /**
   * Moves a token found in settings into SecretStorage (queued after any migration already running); resolves to
   * whether a token was moved.
   */
  migrateFromSettings(): Promise<boolean> {
    const moved = this.migration.then(() => this.migrate()).catch((e: unknown) => {
      this.log.error(`moving glance.remote.token into secret storage failed: ${(e as Error).message}`);
      return false;
    });
    this.migration = moved.then(() => undefined);
    return moved;
  }

  private async migrate(): Promise<boolean> {
    const config = vscode.workspace.getConfiguration('glance');
    const plan = planTokenMigration(config.inspect<string>('remote.token') ?? {});
    if (plan === null) return false;
    await this.secrets.store(SECRET_KEY, plan.token);
    const left: string[] = [];
    for (const scope of plan.clear) {
      try {
        await config.update('remote.token', undefined, SETTING_SCOPES[scope].target);
      } catch (e) {
        left.push(`${SETTING_SCOPES[scope].name} settings (${(e as Error).message})`);
      }
    }
    const where = plan.clear.map((scope) => SETTING_SCOPES[scope].name).join(' and ');
    this.log.warn(`moved the remote sidecar token from ${where} settings into secret storage${left.length ? `; could not remove it from ${left.join(', ')}` : ''}`);
    const message = left.length
      ? `Glance: the remote sidecar token found in settings is now in VS Code's secret storage, but it could not be removed from ${left.join(', ')}. Remove glance.remote.token from settings by hand.`
      : `Glance: the remote sidecar token was in ${where} settings (plain text). It is now in VS Code's secret storage and removed from settings; use "${SET_REMOTE_TOKEN_PALETTE_NAME}" to change it.`;
    void vscode.window.showWarningMessage(message);
    return true;
  }

  /** Asks for the token (masked) and stores it; an empty answer removes it. Returns whether anything changed. */
  async promptAndStore(): Promise<boolean> {
    const token = await vscode.window.showInputBox({
      title: 'Glance: Remote Sidecar Token',
      prompt: "The content of the remote sidecar's --token-file. Kept in VS Code's secret storage, not in settings. Empty removes it.",
      password: true,
      ignoreFocusOut: true,
    });
    if (token === undefined) return false;
    await this.migration;
    if (token.trim() === '') {
      await this.secrets.delete(SECRET_KEY);
      this.log.info('remote sidecar token removed from secret storage');
    } else {
      await this.secrets.store(SECRET_KEY, token.trim());
      this.log.info('remote sidecar token stored in secret storage');
    }
    return true;
  }
}
