// Search/replace edits, editor-agnostic (no vscode import): the sidecar parses a model's answer with
// parseEditBlocks and applies each file's blocks with applyEditBlocks; the reports go into EditResult.

export { parseEditBlocks } from './parse';
export type { EditBlock, EditParseProblem, ParsedEditBlocks } from './parse';
export { applyEditBlocks } from './apply';
export type { AppliedEdits, ApplicableBlock } from './apply';
