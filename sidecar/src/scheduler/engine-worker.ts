// The engine thread: the one owner of the model (a worker_thread, so that a forward pass never blocks the
// connections). One loop picks the next unit of work by priority:
//   1. the highest-priority running task: one prefill chunk of its prompt, or one decode step for every task that
//      is decoding (batched: the weights stream once for all of them);
//   2. otherwise the background target (the repository prompt), one chunk at a time, so it is preempted within
//      one chunk and resumes where it stopped.
// Between units the loop yields to the event loop, where cancels and new tasks arrive: a cancel lands within one
// decode step. Each slot is a sequence with its own caches and the token ids they hold; a task reuses the longest
// common prefix of its slot (keystroke-to-keystroke reuse) or copies a longer one from another slot.

import { parentPort, workerData } from 'node:worker_threads';
import * as path from 'node:path';

import { CompletionBoundary } from '../completion/boundary';
import { errorMessage, isGlanceError } from '../engine/errors';
import { StopFilter } from '../engine/generate';
import { loadModelOnDevice } from '../engine/device';
import type { Model, Sequence } from '../engine/model';
import { Sampler } from '../engine/sampling';
import { loadTokenizer, type StreamDecoder, type Tokenizer } from '../engine/tokenizer';
import { commonPrefixLength as lcp } from './prefix';
import type { EngineToHost, EngineWorkerData, GenerateTask, HostToEngine, TaskFinish, TaskResult } from './messages';

const PREFILL_CHUNK = 256;
/** a prefix held by another slot is copied rather than recomputed when it is longer by at least this much */
const COPY_GAIN = 32;
const STATS_INTERVAL_MS = 250;

interface Slot {
  index: number;
  seq: Sequence;
  /** ids held in seq's caches: tokens[0 .. seq.length) */
  tokens: Int32Array;
  active: Active | null;
}

interface Active {
  task: GenerateTask;
  slot: Slot;
  phase: 'prefill' | 'decode';
  /** prompt tokens already in the slot */
  promptDone: number;
  promptReused: number;
  sampler: Sampler;
  decoder: StreamDecoder | null;
  filter: StopFilter;
  boundary: CompletionBoundary | null;
  stopIds: Set<number>;
  history: number[];
  /** raw text generated (after stop filtering) */
  text: string;
  /** text already sent as deltas */
  sent: number;
  generated: number;
  /** sampled, not yet run through the model */
  pendingId: number;
  queuedAt: number;
  startedAt: number;
  decodeStartedAt: number;
  cancelled: boolean;
}

interface Waiting {
  task: GenerateTask;
  queuedAt: number;
}

class EngineLoop {
  private readonly slots: Slot[] = [];
  private readonly waiting: Waiting[] = [];
  private background: Int32Array = new Int32Array(0);
  private lastTokensPerSecond = 0;
  private lastStatsAt = 0;
  private wake: (() => void) | null = null;
  private stopped = false;

  constructor(
    private readonly model: Model,
    private readonly tokenizer: Tokenizer | null,
    contextWindow: number,
    slotCount: number,
    private readonly post: (m: EngineToHost) => void,
    private readonly prefixReuse: boolean,
  ) {
    for (let i = 0; i < slotCount; i++) {
      this.slots.push({ index: i, seq: model.createSequence(contextWindow), tokens: new Int32Array(1024), active: null });
    }
  }

  handle(m: HostToEngine): void {
    switch (m.type) {
      case 'generate':
        this.waiting.push({ task: m, queuedAt: Date.now() });
        // stable: priority first, then arrival
        this.waiting.sort((a, b) => a.task.priority - b.task.priority || a.queuedAt - b.queuedAt);
        break;
      case 'cancel': {
        const w = this.waiting.findIndex((x) => x.task.taskId === m.taskId);
        if (w >= 0) {
          const [x] = this.waiting.splice(w, 1);
          this.post({ type: 'done', taskId: m.taskId, result: emptyResult('cancelled', Date.now() - x.queuedAt) });
        }
        for (const s of this.slots) if (s.active && s.active.task.taskId === m.taskId) s.active.cancelled = true;
        break;
      }
      case 'background':
        this.background = m.ids;
        // The new target may already be computed (no background work follows): report it now.
        this.postStats(true);
        break;
      case 'status':
        this.postStats(true);
        break;
      case 'shutdown':
        this.stopped = true;
        break;
    }
    this.wake?.();
  }

  async run(): Promise<void> {
    while (!this.stopped) {
      let worked = false;
      try {
        worked = this.unit();
      } catch (e) {
        // A unit failed outside any task's own error handling: report and keep serving.
        this.post({ type: 'failed', message: `engine loop: ${errorMessage(e)}`, code: 'engine' });
      }
      this.postStats(false);
      if (worked) await new Promise((r) => setImmediate(r));
      else await new Promise<void>((r) => { this.wake = r; });
      this.wake = null;
    }
  }

  /** Does one unit of work; false when there was nothing to do. */
  private unit(): boolean {
    this.reapCancelled();
    this.admit();
    const running = this.slots.map((s) => s.active).filter((a): a is Active => a !== null);
    if (running.length > 0) {
      running.sort((a, b) => a.task.priority - b.task.priority || a.queuedAt - b.queuedAt);
      const top = running[0];
      if (top.phase === 'prefill') {
        this.guard(top, () => this.prefillChunk(top));
      } else {
        const decoding = running.filter((a) => a.phase === 'decode');
        this.decodeStep(decoding);
      }
      return true;
    }
    return this.backgroundChunk();
  }

  private reapCancelled(): void {
    for (const s of this.slots) if (s.active?.cancelled) this.finish(s.active, 'cancelled');
  }

  /** Moves waiting tasks into free slots, each into the slot that already holds most of its prompt. */
  private admit(): void {
    while (this.waiting.length > 0) {
      const free = this.slots.filter((s) => s.active === null);
      if (free.length === 0) return;
      const { task, queuedAt } = this.waiting.shift()!;
      let slot = free[0];
      let best = -1;
      for (const s of free) {
        const l = lcp(s.tokens, s.seq.length, task.prompt);
        if (l > best) {
          best = l;
          slot = s;
        }
      }
      this.start(task, slot, queuedAt);
    }
  }

  private start(task: GenerateTask, slot: Slot, queuedAt: number): void {
    const now = Date.now();
    let reuse = this.prefixReuse ? Math.min(lcp(slot.tokens, slot.seq.length, task.prompt), task.prompt.length - 1) : 0;
    // A longer common prefix in another slot (the repository prefix computed there): copy it.
    for (const other of this.slots) {
      if (other === slot || !this.prefixReuse) continue;
      const l = Math.min(lcp(other.tokens, other.seq.length, task.prompt), task.prompt.length - 1);
      if (l >= reuse + COPY_GAIN) {
        slot.seq.copyPrefixFrom(other.seq, l);
        slot.tokens = ensureCapacity(slot.tokens, l);
        slot.tokens.set(other.tokens.subarray(0, l));
        reuse = l;
      }
    }
    slot.seq.truncate(Math.max(0, reuse));
    const tok = this.tokenizer;
    const stopIds = new Set(task.stopIds);
    const a: Active = {
      task,
      slot,
      phase: 'prefill',
      promptDone: Math.max(0, reuse),
      promptReused: Math.max(0, reuse),
      sampler: new Sampler(task.sampling),
      decoder: tok ? tok.createStreamDecoder({ skipSpecialTokens: true, context: task.prompt.subarray(Math.max(0, task.prompt.length - 6)) }) : null,
      filter: new StopFilter(task.stop),
      boundary: task.rule.kind === 'completion'
        ? new CompletionBoundary({
          suffix: task.rule.suffix, linePrefix: task.rule.linePrefix, maxLines: task.rule.maxLines, stopAtBlankLine: task.rule.stopAtBlankLine,
        })
        : null,
      stopIds,
      history: Array.from(task.prompt.subarray(Math.max(0, task.prompt.length - 256))),
      text: '',
      sent: 0,
      generated: 0,
      pendingId: -1,
      queuedAt,
      startedAt: now,
      decodeStartedAt: 0,
      cancelled: false,
    };
    slot.active = a;
    if (task.maxTokens === 0) this.finish(a, 'length');
  }

  private prefillChunk(a: Active): void {
    const { task, slot } = a;
    const end = Math.min(task.prompt.length, a.promptDone + PREFILL_CHUNK);
    const chunk = task.prompt.subarray(a.promptDone, end);
    const logits = slot.seq.forward(chunk, false);
    appendTokens(slot, chunk);
    a.promptDone = end;
    if (end === task.prompt.length) {
      a.phase = 'decode';
      a.decodeStartedAt = Date.now();
      this.accept(a, logits);
    } else if (this.timeUp(a)) {
      this.finish(a, 'time');
    }
  }

  private decodeStep(batch: Active[]): void {
    let logits: Float32Array[];
    try {
      logits = this.model.decodeBatch(batch.map((a) => ({ sequence: a.slot.seq, id: a.pendingId })));
    } catch (e) {
      for (const a of batch) this.fail(a, e);
      return;
    }
    for (let i = 0; i < batch.length; i++) {
      const a = batch[i];
      appendTokens(a.slot, Int32Array.of(a.pendingId));
      this.guard(a, () => this.accept(a, logits[i]));
    }
  }

  /** Samples the next token from `logits` and decides whether the task is done. */
  private accept(a: Active, logits: Float32Array): void {
    const V = this.model.config.vocabSize;
    const row = logits.length === V ? logits : logits.subarray(logits.length - V);
    const id = a.sampler.sample(row, a.history);
    a.history.push(id);
    a.generated++;
    if (a.stopIds.has(id)) {
      const rest = a.filter.push(a.decoder ? a.decoder.flush() : '', true);
      a.text += rest.text;
      this.finish(a, rest.stopped ? 'stop' : 'eos');
      return;
    }
    const delta = a.decoder ? a.decoder.push(id) : '';
    const out = a.filter.push(delta, false);
    a.text += out.text;
    if (a.boundary) {
      const v = a.boundary.check(a.text);
      if (v.done) {
        a.text = v.text;
        this.finish(a, 'boundary');
        return;
      }
    }
    if (out.stopped) {
      this.finish(a, 'stop');
      return;
    }
    this.flushDeltas(a);
    if (a.generated >= a.task.maxTokens) {
      a.text += a.filter.push(a.decoder ? a.decoder.flush() : '', true).text;
      if (a.boundary) a.text = a.boundary.check(a.text).text;
      this.finish(a, 'length');
      return;
    }
    if (this.timeUp(a)) {
      this.finish(a, 'time');
      return;
    }
    a.pendingId = id;
  }

  private timeUp(a: Active): boolean {
    return a.task.timeBoxMs > 0 && Date.now() - a.startedAt > a.task.timeBoxMs;
  }

  private flushDeltas(a: Active): void {
    if (!a.task.stream || a.text.length <= a.sent) return;
    this.post({ type: 'delta', taskId: a.task.taskId, text: a.text.slice(a.sent) });
    a.sent = a.text.length;
  }

  private finish(a: Active, reason: TaskFinish): void {
    if (reason !== 'cancelled') this.flushDeltas(a);
    const now = Date.now();
    const decodeMs = a.decodeStartedAt > 0 ? now - a.decodeStartedAt : 0;
    const tps = decodeMs > 0 ? (a.generated * 1000) / decodeMs : 0;
    if (a.generated > 1 && tps > 0) this.lastTokensPerSecond = tps;
    const result: TaskResult = {
      text: a.text,
      finishReason: reason,
      promptComputed: a.promptDone - a.promptReused,
      promptReused: a.promptReused,
      generatedTokens: a.generated,
      tokensPerSecond: tps,
      runMs: now - a.startedAt,
      queueMs: a.startedAt - a.queuedAt,
    };
    a.slot.active = null;
    this.post({ type: 'done', taskId: a.task.taskId, result });
    this.postStats(true);
  }

  private fail(a: Active, e: unknown): void {
    // Keep the slot's bookkeeping true to its caches whatever the failure left behind.
    const slot = a.slot;
    slot.seq.truncate(Math.min(slot.seq.length, slot.tokens.length));
    slot.active = null;
    this.post({
      type: 'error',
      taskId: a.task.taskId,
      message: errorMessage(e),
      code: isGlanceError(e) ? e.code : 'engine',
    });
  }

  private guard(a: Active, f: () => void): void {
    try {
      f();
    } catch (e) {
      this.fail(a, e);
    }
  }

  /** One chunk of the repository prompt into the free slot that holds most of it. */
  private backgroundChunk(): boolean {
    const target = this.background;
    if (target.length === 0 || !this.prefixReuse) return false;
    let slot: Slot | null = null;
    let best = -1;
    for (const s of this.slots) {
      if (s.active) continue;
      const l = lcp(s.tokens, s.seq.length, target);
      if (l > best) {
        best = l;
        slot = s;
      }
    }
    if (slot === null || best >= target.length) return false;
    slot.seq.truncate(best);
    const end = Math.min(target.length, best + PREFILL_CHUNK);
    const chunk = target.subarray(best, end);
    try {
      slot.seq.forward(chunk, false);
      appendTokens(slot, chunk);
    } catch (e) {
      slot.seq.truncate(best);
      this.background = new Int32Array(0);
      this.post({ type: 'failed', message: `repository prefill stopped: ${errorMessage(e)}`, code: isGlanceError(e) ? e.code : 'engine' });
    }
    this.postStats(true);
    return true;
  }

  private postStats(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastStatsAt < STATS_INTERVAL_MS) return;
    this.lastStatsAt = now;
    let cached = 0;
    let bytes = 0;
    for (const s of this.slots) {
      cached = Math.max(cached, lcp(s.tokens, s.seq.length, this.background));
      bytes += s.seq.cacheBytes;
    }
    this.post({
      type: 'stats',
      stats: {
        cachedTokens: cached,
        targetTokens: this.background.length,
        waiting: this.waiting.length,
        running: this.slots.filter((s) => s.active).length,
        kvCacheBytes: bytes,
        tokensPerSecond: this.lastTokensPerSecond,
      },
    });
  }
}

function emptyResult(reason: TaskFinish, queueMs: number): TaskResult {
  return { text: '', finishReason: reason, promptComputed: 0, promptReused: 0, generatedTokens: 0, tokensPerSecond: 0, runMs: 0, queueMs };
}

function ensureCapacity(a: Int32Array, n: number): Int32Array {
  if (a.length >= n) return a;
  let cap = Math.max(1024, a.length);
  while (cap < n) cap *= 2;
  const b = new Int32Array(cap);
  b.set(a);
  return b;
}

function appendTokens(slot: Slot, ids: Int32Array): void {
  const at = slot.seq.length - ids.length;
  slot.tokens = ensureCapacity(slot.tokens, slot.seq.length);
  slot.tokens.set(ids, at);
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('engine-worker must run in a worker thread');
  const data = workerData as EngineWorkerData;
  const post = (m: EngineToHost): void => port.postMessage(m);
  const early: HostToEngine[] = [];
  let loop: EngineLoop | null = null;
  port.on('message', (m: HostToEngine) => {
    if (loop) loop.handle(m);
    else early.push(m);
  });
  let model: Model;
  let tokenizer: Tokenizer | null;
  let device: string;
  try {
    const loaded = await loadModelOnDevice(data.modelDir, {
      device: data.device === 'cuda' || data.device === 'cpu' ? data.device : 'auto',
      ...(data.gpuMemory !== null ? { gpuMemory: data.gpuMemory } : {}),
      attention: data.attention,
      indexerPrecision: 'fp8',
      onProgress: (done, total, what) => post({ type: 'loading', done, total, what }),
    });
    model = loaded.model;
    device = loaded.kind === 'cuda' ? 'cuda' : 'cpu';
    if (loaded.fallback) post({ type: 'loading', done: 1, total: 1, what: `running on the CPU: ${loaded.fallback}` });
    tokenizer = loadTokenizer(data.modelDir);
  } catch (e) {
    const code = isGlanceError(e) ? e.code : ((e as { code?: string }).code ?? 'load');
    post({ type: 'failed', message: errorMessage(e), code });
    // End the thread (its message listener would keep it alive), so a sidecar that failed to load exits.
    setImmediate(() => process.exit(1));
    return;
  }
  const cfg = model.config;
  const contextWindow = Math.min(cfg.maxPositionEmbeddings, data.contextWindow ?? cfg.maxPositionEmbeddings);
  loop = new EngineLoop(model, tokenizer, contextWindow, data.slots, post, data.prefixReuse);
  post({
    type: 'ready',
    info: {
      model: path.basename(path.resolve(data.modelDir)),
      device,
      contextWindow,
      indexTopk: model.attention === 'sparse' && cfg.indexer ? cfg.indexer.topk : null,
      vocabSize: cfg.vocabSize,
      slots: data.slots,
    },
  });
  for (const m of early) loop.handle(m);
  await loop.run();
  process.exit(0);
}

if (parentPort) {
  main().catch((e) => {
    parentPort!.postMessage({ type: 'failed', message: errorMessage(e), code: 'engine' } satisfies EngineToHost);
  });
}
