// Messages between the sidecar's main thread (connections, parsing, workspace, prompt layout) and the engine
// thread that owns the model (llama.cpp's server split: connection handling never waits on a forward pass, and
// one loop decides what the model computes next).

import type { SamplerOptions } from '../engine/sampling';

/** 0: inline completion, 1: chat / edit. Background repository prefill runs only when nothing else waits. */
export type Priority = 0 | 1;

export interface CompletionStopRule {
  kind: 'completion';
  suffix: string;
  linePrefix: string;
  maxLines: number;
  /** default true */
  stopAtBlankLine?: boolean;
}
export interface PlainStopRule {
  kind: 'plain';
}
export type StopRule = CompletionStopRule | PlainStopRule;

export interface GenerateTask {
  type: 'generate';
  taskId: number;
  priority: Priority;
  /** the whole prompt: repository prefix + this request's own tokens (the engine reuses what its caches hold) */
  prompt: Int32Array;
  /** how many leading prompt tokens are the shared repository prefix (worth copying between slots) */
  sharedPrefix: number;
  maxTokens: number;
  sampling: SamplerOptions;
  /** token ids that end generation */
  stopIds: number[];
  /** text stop sequences */
  stop: string[];
  rule: StopRule;
  /** wall-clock budget from the moment the task starts running; 0 = none */
  timeBoxMs: number;
  /** send each finalised piece of text as a delta */
  stream: boolean;
}

export type HostToEngine =
  | GenerateTask
  | { type: 'cancel'; taskId: number }
  /** the repository prompt to keep computed when idle (replaces the previous target) */
  | { type: 'background'; ids: Int32Array }
  | { type: 'status' }
  | { type: 'shutdown' };

export type TaskFinish = 'eos' | 'stop' | 'length' | 'cancelled' | 'time' | 'boundary';

export interface TaskResult {
  text: string;
  finishReason: TaskFinish;
  /** tokens this task had to compute for its prompt (not found in a cache) */
  promptComputed: number;
  /** prompt tokens that came from a cache */
  promptReused: number;
  generatedTokens: number;
  /** generation speed of this task, tokens per second of decode */
  tokensPerSecond: number;
  /** ms from start of running to the end */
  runMs: number;
  /** ms spent waiting for a slot */
  queueMs: number;
}

export interface EngineStats {
  /** tokens of the background target computed in some slot */
  cachedTokens: number;
  targetTokens: number;
  waiting: number;
  running: number;
  kvCacheBytes: number;
  tokensPerSecond: number;
}

export interface EngineInfo {
  model: string;
  device: string;
  contextWindow: number;
  indexTopk: number | null;
  vocabSize: number;
  slots: number;
}

export type EngineToHost =
  | { type: 'loading'; done: number; total: number; what: string }
  | { type: 'ready'; info: EngineInfo }
  | { type: 'failed'; message: string; code: string }
  | { type: 'delta'; taskId: number; text: string }
  | { type: 'done'; taskId: number; result: TaskResult }
  | { type: 'error'; taskId: number; message: string; code: string }
  | { type: 'stats'; stats: EngineStats };

export interface EngineWorkerData {
  modelDir: string;
  device: string;
  attention: 'sparse' | 'dense';
  contextWindow: number | null;
  slots: number;
  gpuMemory: string | null;
  /** false: every task computes its whole prompt (the benchmark's baseline without prefix reuse) */
  prefixReuse: boolean;
}
