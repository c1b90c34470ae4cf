// The "Set Remote Sidecar Token" command, named once for the code that registers, offers or mentions it. package.json
// must keep the same id and title as literals (contributes.commands); extension/test/misc.test.ts checks they match.
// No vscode import: remoteUrl.ts, which the unit tests load outside VS Code, uses it.

export const SET_REMOTE_TOKEN_COMMAND = 'glance.setRemoteToken';
export const SET_REMOTE_TOKEN_TITLE = 'Set Remote Sidecar Token';
/** the command as the Command Palette lists it (package.json gives it the category "Glance") */
export const SET_REMOTE_TOKEN_PALETTE_NAME = `Glance: ${SET_REMOTE_TOKEN_TITLE}`;
