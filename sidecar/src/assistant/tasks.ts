// Running one generation on the engine for a request: submission (a full queue answers "busy"), cancellation wired
// from the request's cancellation token, and engine failures turned into protocol errors.

import type { CancellationToken } from 'vscode-languageserver/node';

import { EngineBusyError, EngineTaskError, type EngineHost } from '../scheduler/engine-host';
import type { GenerateTask, TaskResult } from '../scheduler/messages';
import { rpc } from '../server/rpc-error';

export type TaskSpec = Omit<GenerateTask, 'type' | 'taskId'>;

export interface RunningTask {
  taskId: number;
  result: Promise<TaskResult>;
}

export function startTask(engine: EngineHost, spec: TaskSpec, token: CancellationToken | null, onDelta?: (text: string) => void): RunningTask {
  let running;
  try {
    running = engine.submit(spec, onDelta);
  } catch (e) {
    if (e instanceof EngineBusyError) throw rpc.busy(e.retryAfterMs, e.message);
    throw rpc.model((e as Error).message);
  }
  const sub = token?.onCancellationRequested(() => engine.cancel(running.taskId));
  if (token?.isCancellationRequested) engine.cancel(running.taskId);
  const result = running.result.then(
    (r) => {
      sub?.dispose();
      return r;
    },
    (e: unknown) => {
      sub?.dispose();
      if (e instanceof EngineTaskError && e.code === 'context_overflow') throw rpc.overflow(e.message);
      throw rpc.model(`the model failed: ${(e as Error).message}`);
    },
  );
  return { taskId: running.taskId, result };
}
