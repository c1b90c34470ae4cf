// The typed protocol between the editor adapter (extension/) and the sidecar: JSON-RPC 2.0 over WebSocket, one
// message per text frame, LSP where LSP has the method, `glance/…` where it does not. This file has no runtime
// dependencies so that both sides (the sidecar with vscode-languageserver, the extension with
// vscode-languageclient) import the same names and shapes.

/** Bumped when a method or a shape changes incompatibly; the extension refuses to adopt a sidecar of another one. */
export const PROTOCOL_VERSION = 1;

/** The WebSocket path the sidecar serves (upgrades elsewhere are refused with 404). */
export const WEBSOCKET_PATH = '/lsp';

// ---- process discovery -------------------------------------------------------------------------------------

/** Printed as the only line on the sidecar's stdout once it accepts connections. */
export interface ReadyLine {
  event: 'ready';
  port: number;
  pid: number;
  model: string;
  device: string;
}

/** ~/.cache/glance/sidecar.json (mode 0600): lets other editor windows find and share a running sidecar. */
export interface SidecarLockFile {
  port: number;
  host: string;
  pid: number;
  /** file holding the bearer token (mode 0600) */
  tokenFile: string;
  /** absolute model directory */
  model: string;
  /** sidecar package version */
  version: string;
  protocolVersion: number;
  device: string;
  startedAt: string;
}

// ---- initialize ----------------------------------------------------------------------------------------------

/** `initialize` result: `capabilities.experimental.glance`. */
export interface GlanceCapabilities {
  /** model name (directory basename) */
  model: string;
  device: string;
  /** tokens the model attends to at most (max_position_embeddings, capped by the sidecar's --context) */
  contextWindow: number;
  /** DSA top-k: positions each token attends to; null for dense-only models */
  indexTopk: number | null;
  version: string;
  protocolVersion: number;
}

// ---- workspace --------------------------------------------------------------------------------------------------

/** Content hash used everywhere: sha256 of the UTF-8 bytes, lowercase hex. */
export type ContentHash = string;

export interface WorkspaceFileEntry {
  /** file:// URI inside one of the workspace folders */
  uri: string;
  hash: ContentHash;
  /** the text; omitted when the client thinks the sidecar may already have it (same hash) */
  text?: string;
}

export const WorkspaceFilesMethod = 'glance/workspaceFiles';
export interface WorkspaceFilesParams {
  files: WorkspaceFileEntry[];
  /** URIs no longer in the workspace (deleted, ignored, or their folder removed) */
  removed?: string[];
  /** true on the last batch of a full scan: files the sidecar holds that no batch of this scan named are dropped */
  scanComplete?: boolean;
  /** identifies one full scan (the client picks it); with scanComplete */
  scanId?: string;
}
export interface WorkspaceFilesResult {
  /** URIs whose text the sidecar lacks (its hash is unknown to it): send them again with `text` */
  missing: string[];
  /** entries taken (with text, or known by hash) */
  accepted: number;
  /** entries left out of the repository context, with the reason (binary, too large, generated…) */
  skipped: { uri: string; reason: string }[];
}

// ---- inline completion (LSP 3.18 textDocument/inlineCompletion) ------------------------------------------------

export const InlineCompletionMethod = 'textDocument/inlineCompletion';
export interface Position {
  line: number;
  /** UTF-16 code units, as LSP */
  character: number;
}
export interface Range {
  start: Position;
  end: Position;
}
export interface InlineCompletionParams {
  textDocument: { uri: string };
  position: Position;
  context: { triggerKind: 1 | 2; selectedCompletionInfo?: { range: Range; text: string } };
}
export interface InlineCompletionItem {
  insertText: string;
  range?: Range;
}
/** Extra, non-LSP timing information the sidecar attaches to every completion list. */
export interface CompletionTiming {
  requestId: string;
  /** wall time from receipt to answer */
  latencyMs: number;
  /** tokens of prompt computed for this request (the rest came from the cache) */
  promptTokens: number;
  reusedTokens: number;
  generatedTokens: number;
  tokensPerSecond: number;
  /** why generation stopped: boundary (end of statement/block), stop, length, time (time box), eos */
  stopReason: string;
}
export interface InlineCompletionList {
  items: InlineCompletionItem[];
  glance?: CompletionTiming;
}

// ---- chat ---------------------------------------------------------------------------------------------------

export type ChatRole = 'system' | 'user' | 'assistant';
export interface ChatMessage {
  role: ChatRole;
  content: string;
}
export interface ChatContext {
  /** the active editor's document */
  uri?: string;
  /** the selected text (and where), given to the model as extra context */
  selection?: { uri: string; range: Range; text: string };
  /** `@file` mentions: documents whose full text is put right before the question */
  files?: string[];
}

export const ChatMethod = 'glance/chat';
export interface ChatParams {
  messages: ChatMessage[];
  maxTokens?: number;
  /** client-chosen id echoed in every chatDelta (the JSON-RPC id is not visible to a language client) */
  requestId?: string;
  context?: ChatContext;
}
export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** repository tokens the answer attended to (the cached prefix) */
  contextTokens: number;
}
export interface ChatResult {
  text: string;
  usage: Usage;
  finishReason: 'eos' | 'stop' | 'length' | 'cancelled';
}

export const ChatDeltaNotification = 'glance/chatDelta';
export interface ChatDeltaParams {
  requestId: string;
  text: string;
}

// ---- edits (refactors and agentic edits) ---------------------------------------------------------------------

export type EditKind = 'edit' | 'explain' | 'types' | 'docs' | 'tests' | 'fix';
export interface EditTarget {
  uri: string;
  /** the selection to work on; the whole document when absent */
  range?: Range;
}
export interface EditDiagnostic {
  uri: string;
  range: Range;
  severity: 'error' | 'warning' | 'info' | 'hint';
  message: string;
}

export const EditMethod = 'glance/edit';
export interface EditParams {
  kind: EditKind;
  /** the user's instruction (required for kind 'edit') */
  instruction?: string;
  target: EditTarget;
  diagnostics?: EditDiagnostic[];
  maxTokens?: number;
  /** client-chosen id echoed in editDelta notifications */
  requestId?: string;
}
/** How one search/replace block landed. */
export type BlockMatch = 'exact' | 'whitespace' | 'fuzzy' | 'failed';
export interface EditBlockReport {
  index: number;
  match: BlockMatch;
  /** for failed blocks: why, readable */
  message?: string;
}
export interface FileEdit {
  uri: string;
  /** hash of the text the edit was computed against: the client refuses to apply onto anything else */
  baseHash: ContentHash;
  newText: string;
  blocks: EditBlockReport[];
  /** the file does not exist yet */
  create?: boolean;
}
export interface EditResult {
  /** the model's raw answer (for explain: the explanation) */
  text: string;
  files: FileEdit[];
  usage: Usage;
  /** blocks that named a file outside the workspace or could not be parsed */
  rejected: { index: number; message: string }[];
}
export const EditDeltaNotification = 'glance/editDelta';
export type EditDeltaParams = ChatDeltaParams;

// ---- status -------------------------------------------------------------------------------------------------

export type SidecarState = 'loading' | 'indexing' | 'ready' | 'error';
export const StatusMethod = 'glance/status';
export interface StatusResult {
  state: SidecarState;
  model: string;
  device: string;
  /** tokens of the repository prompt (what the model sees) */
  contextTokens: number;
  /** of those, tokens whose KV + indexer caches are computed */
  cachedTokens: number;
  /** files in the repository prompt / files known */
  files: { inContext: number; known: number; skipped: number };
  /** requests waiting + running */
  queue: { waiting: number; running: number };
  /** decode speed of the last generation */
  tokensPerSecond: number;
  memory: { rssBytes: number; heapBytes: number; kvCacheBytes: number };
  /** while state is 'indexing': prefill progress */
  indexing?: { done: number; total: number };
  /** while state is 'error' */
  error?: string;
}
/** Pushed by the sidecar whenever the state or the indexing progress changes (at most ~4 per second). */
export const StatusChangedNotification = 'glance/statusChanged';
export type StatusChangedParams = StatusResult;

// ---- errors -------------------------------------------------------------------------------------------------

/** JSON-RPC error codes beyond the standard ones. Every error's `data` is `{requestId, detail?}`. */
export const ErrorCodes = {
  /** the queue is full: retry after data.retryAfterMs */
  Busy: -32001,
  /** a newer completion for the same document replaced this one */
  Superseded: -32002,
  /** the path is outside every workspace folder */
  OutsideWorkspace: -32003,
  /** the model failed (details in the sidecar log under data.requestId) */
  ModelError: -32004,
  /** the document is not open / not known */
  UnknownDocument: -32005,
  /** the prompt does not fit in the context window */
  ContextOverflow: -32006,
  /** LSP's RequestCancelled */
  RequestCancelled: -32800,
  InvalidParams: -32602,
  MethodNotFound: -32601,
} as const;
export interface ErrorData {
  requestId: string;
  retryAfterMs?: number;
  detail?: string;
}
