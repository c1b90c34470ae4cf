// Resolving an `@path` mention of the chat to one file of a (possibly multi-root) workspace. Pure: the chat view
// finds the candidate files of every folder, this decides. A mention may be folder-qualified (`@api/src/x.ts`,
// the folder's name first, as the sidecar names files of multi-root workspaces); where the same path exists in
// several folders an unqualified mention is ambiguous, and the user is told which qualified names to write.
// Backslashes separate segments too (`@api\src\x.ts`, as Windows users type paths).

export interface MentionCandidate {
  /** the workspace folder's name */
  folder: string;
  /** path inside that folder, with / */
  relativePath: string;
  uri: string;
}

export type MentionResolution =
  | { kind: 'file'; uri: string; display: string }
  | { kind: 'ambiguous'; options: string[] }
  | { kind: 'none' };

/** How the chat names a file: folder-qualified in a multi-root workspace, as the sidecar's prompt does. */
export function displayName(candidate: MentionCandidate, folderCount: number): string {
  return folderCount > 1 ? `${candidate.folder}/${candidate.relativePath}` : candidate.relativePath;
}

/** The mention as a workspace-relative path with `/` (backslashes as separators, no leading `./`), for globs too. */
export function normalizeMention(mention: string): string {
  return mention.replace(/\\/g, '/').replace(/^\.\//, '');
}

/**
 * Picks the file a mention means among candidates (files whose path ends with the mention, from every folder):
 * a folder-qualified exact path first, then an exact relative path, then a path ending in the mention; more than
 * one at the best level is ambiguous.
 */
export function resolveMention(mention: string, folderCount: number, candidates: readonly MentionCandidate[]): MentionResolution {
  const wanted = normalizeMention(mention);
  const unique = new Map(candidates.map((c) => [c.uri, c]));
  const all = [...unique.values()];
  const levels: ((c: MentionCandidate) => boolean)[] = [
    (c) => `${c.folder}/${c.relativePath}` === wanted,
    (c) => c.relativePath === wanted,
    (c) => c.relativePath.endsWith(`/${wanted}`) || `${c.folder}/${c.relativePath}`.endsWith(`/${wanted}`),
  ];
  for (const matches of levels) {
    const found = all.filter(matches);
    if (found.length === 1 && found[0]) return { kind: 'file', uri: found[0].uri, display: displayName(found[0], folderCount) };
    if (found.length > 1) {
      // in a multi-root workspace the options are folder-qualified, so each names one file
      return { kind: 'ambiguous', options: found.map((c) => displayName(c, folderCount)).sort() };
    }
  }
  return { kind: 'none' };
}

/** The folder a mention names by its first segment, with the rest of the path, if any folder is named so. */
export function splitFolderQualified(mention: string, folderNames: readonly string[]): { folder: string; rest: string } | null {
  const wanted = normalizeMention(mention);
  for (const folder of folderNames) {
    if (wanted.startsWith(`${folder}/`) && wanted.length > folder.length + 1) return { folder, rest: wanted.slice(folder.length + 1) };
  }
  return null;
}
