// Pure part of moving a remote sidecar token out of plain settings (glance.remote.token) into SecretStorage.

export type TokenSettingScope = 'global' | 'workspace' | 'workspaceFolder';

/** What `WorkspaceConfiguration.inspect('remote.token')` says, reduced to the scopes that can hold a value. */
export interface TokenSettingValues {
  globalValue?: unknown;
  workspaceValue?: unknown;
  workspaceFolderValue?: unknown;
}

/**
 * Which token to keep and which scopes to clear, or null when no scope holds one. The most specific scope wins,
 * as VS Code resolves settings (workspace folder, then workspace, then user), so the token that was in effect moves.
 */
export function planTokenMigration(values: TokenSettingValues): { token: string; clear: TokenSettingScope[] } | null {
  const scopes: [TokenSettingScope, unknown][] = [
    ['workspaceFolder', values.workspaceFolderValue],
    ['workspace', values.workspaceValue],
    ['global', values.globalValue],
  ];
  const held = scopes.filter(([, v]) => typeof v === 'string' && v.trim() !== '') as [TokenSettingScope, string][];
  const first = held[0];
  if (!first) return null;
  return { token: first[1].trim(), clear: held.map(([scope]) => scope) };
}
