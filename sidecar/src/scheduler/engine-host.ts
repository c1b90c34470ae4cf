// The main thread's handle on the engine thread: starts it, submits generation tasks and gets their deltas and
// results back as promises, cancels them, and keeps the engine's latest statistics. It also bounds the number of
// tasks in flight: past `maxQueue` a submission is refused at once with a retry hint (never an unbounded queue).

import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import type { EngineInfo, EngineStats, EngineToHost, EngineWorkerData, GenerateTask, TaskResult } from './messages';

export class EngineBusyError extends Error {
  constructor(readonly retryAfterMs: number, inFlight: number) {
    super(`the sidecar is busy (${inFlight} requests in flight); retry in ${retryAfterMs} ms`);
  }
}

export class EngineTaskError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

interface Pending {
  resolve: (r: TaskResult) => void;
  reject: (e: Error) => void;
  onDelta?: (text: string) => void;
}

export interface EngineHostEvents {
  loading: [done: number, total: number, what: string];
  ready: [info: EngineInfo];
  failed: [message: string, code: string];
  stats: [stats: EngineStats];
  exit: [code: number];
}

export class EngineHost extends EventEmitter<EngineHostEvents> {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextTaskId = 1;
  info: EngineInfo | null = null;
  stats: EngineStats = { cachedTokens: 0, targetTokens: 0, waiting: 0, running: 0, kvCacheBytes: 0, tokensPerSecond: 0 };

  constructor(private readonly data: EngineWorkerData, private readonly maxQueue: number) {
    super();
  }

  /** Starts the engine thread; resolves when the model is loaded, rejects with the load error. */
  start(): Promise<EngineInfo> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(path.join(__dirname, 'engine-worker.js'), { workerData: this.data });
      this.worker = worker;
      let settled = false;
      worker.on('message', (m: EngineToHost) => {
        if (m.type === 'ready') {
          this.info = m.info;
          settled = true;
          resolve(m.info);
        } else if (m.type === 'failed' && !settled) {
          settled = true;
          reject(new EngineTaskError(m.message, m.code));
        }
        this.onMessage(m);
      });
      worker.on('error', (e) => {
        if (!settled) {
          settled = true;
          reject(e);
        }
        this.emit('failed', `engine thread crashed: ${e.message}`, 'engine');
        this.rejectAll(new EngineTaskError(`engine thread crashed: ${e.message}`, 'engine'));
      });
      worker.on('exit', (code) => {
        this.worker = null;
        if (!settled) {
          settled = true;
          reject(new Error(`engine thread exited with code ${code} while loading`));
        }
        this.rejectAll(new EngineTaskError('the engine stopped', 'engine'));
        this.emit('exit', code);
      });
    });
  }

  /** false in the benchmark's baseline mode: nothing is reused, so nothing is worth waiting for */
  get prefixReuse(): boolean {
    return this.data.prefixReuse;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** Submits a task. Resolves with its result (also when cancelled: finishReason 'cancelled'). */
  submit(task: Omit<GenerateTask, 'type' | 'taskId'>, onDelta?: (text: string) => void): { taskId: number; result: Promise<TaskResult> } {
    if (!this.worker) throw new EngineTaskError('the engine is not running', 'engine');
    if (this.pending.size >= this.maxQueue) throw new EngineBusyError(250 * Math.max(1, this.pending.size - this.maxQueue + 1), this.pending.size);
    const taskId = this.nextTaskId++;
    const result = new Promise<TaskResult>((resolve, reject) => {
      this.pending.set(taskId, { resolve, reject, onDelta });
    });
    this.worker.postMessage({ ...task, type: 'generate', taskId } satisfies GenerateTask);
    return { taskId, result };
  }

  cancel(taskId: number): void {
    if (this.pending.has(taskId)) this.worker?.postMessage({ type: 'cancel', taskId });
  }

  setBackground(ids: Int32Array): void {
    this.worker?.postMessage({ type: 'background', ids });
  }

  async stop(): Promise<void> {
    const w = this.worker;
    if (!w) return;
    w.postMessage({ type: 'shutdown' });
    const timer = setTimeout(() => void w.terminate(), 2000);
    await new Promise<void>((r) => w.once('exit', () => r()));
    clearTimeout(timer);
  }

  private onMessage(m: EngineToHost): void {
    switch (m.type) {
      case 'loading':
        this.emit('loading', m.done, m.total, m.what);
        break;
      case 'ready':
        this.emit('ready', m.info);
        break;
      case 'failed':
        this.emit('failed', m.message, m.code);
        break;
      case 'stats':
        this.stats = m.stats;
        this.emit('stats', m.stats);
        break;
      case 'delta':
        this.pending.get(m.taskId)?.onDelta?.(m.text);
        break;
      case 'done': {
        const p = this.pending.get(m.taskId);
        this.pending.delete(m.taskId);
        p?.resolve(m.result);
        break;
      }
      case 'error': {
        const p = this.pending.get(m.taskId);
        this.pending.delete(m.taskId);
        p?.reject(new EngineTaskError(m.message, m.code));
        break;
      }
    }
  }

  private rejectAll(e: Error): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(e);
    }
  }
}
