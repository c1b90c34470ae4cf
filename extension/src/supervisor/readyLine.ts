// The sidecar prints exactly one JSON ReadyLine on stdout once it accepts connections.
import type { ReadyLine } from '../../../sidecar/src/protocol';

/** Parses one stdout line; null when it is not a ready line (other output is logged, not fatal). */
export function parseReadyLine(line: string): ReadyLine | null {
  const trimmed = line.trim();
  if (!trimmed.startsWith('{')) return null;
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (v.event !== 'ready' || typeof v.port !== 'number' || typeof v.pid !== 'number') return null;
  return {
    event: 'ready',
    port: v.port,
    pid: v.pid,
    model: typeof v.model === 'string' ? v.model : '',
    device: typeof v.device === 'string' ? v.device : '',
  };
}
