// Pure formatting of the status bar (no vscode import, unit-tested).
import type { StatusResult } from '../../../sidecar/src/protocol';

/** Structural copy of the supervisor states this module needs (the supervisor imports vscode). */
export type SupervisorStateView =
  | { kind: 'starting'; detail: string }
  | { kind: 'restarting'; reason: string; delayMs: number; attempt: number }
  | { kind: 'connected'; origin: 'spawned' | 'adopted' | 'remote'; pid: number | null; capabilities: { model: string; device: string } | null }
  | { kind: 'error'; message: string; advice: string; stderrTail: string[]; short?: string }
  | { kind: 'stopped' };

export interface LastRequest {
  kind: 'completion' | 'chat' | 'edit';
  latencyMs: number;
  tokensPerSecond: number;
}

export interface StatusView {
  text: string;
  /** short state word for accessibility and tests: starting, restarting, loading, indexing, ready, error */
  label: string;
  tooltip: string;
  severity: 'normal' | 'warning' | 'error';
}

export function formatTokens(n: number): string {
  if (n >= 1_000_000) return `${(n / 1_000_000).toFixed(1)}M`;
  if (n >= 10_000) return `${Math.round(n / 1000)}k`;
  if (n >= 1000) return `${(n / 1000).toFixed(1)}k`;
  return String(n);
}

export function formatStatus(
  supervisor: SupervisorStateView,
  sidecar: StatusResult | null,
  last: LastRequest | null,
  completionsOn: boolean,
): StatusView {
  const off = completionsOn ? '' : ' (completions off)';
  switch (supervisor.kind) {
    case 'stopped':
      return { text: '$(circle-slash) Glance', label: 'stopped', tooltip: 'Glance is stopped', severity: 'normal' };
    case 'starting':
      return { text: '$(sync~spin) Glance: starting', label: 'starting', tooltip: `Glance: ${supervisor.detail}`, severity: 'normal' };
    case 'restarting':
      return {
        text: `$(sync~spin) Glance: restarting`,
        label: 'restarting',
        tooltip: `Glance: ${supervisor.reason}; restart ${supervisor.attempt} in ${Math.round(supervisor.delayMs)} ms`,
        severity: 'warning',
      };
    case 'error':
      return {
        text: `$(error) Glance: ${supervisor.short ?? 'error'}`,
        label: 'error',
        tooltip: `**${supervisor.message}**\n\n${supervisor.advice}${supervisor.stderrTail.length > 0 ? `\n\n\`\`\`\n${supervisor.stderrTail.slice(-8).join('\n')}\n\`\`\`` : ''}`,
        severity: 'error',
      };
    case 'connected':
      break;
  }
  const model = sidecar?.model ?? supervisor.capabilities?.model ?? '?';
  const device = sidecar?.device ?? supervisor.capabilities?.device ?? '?';
  const origin = supervisor.origin === 'spawned' ? 'started by this window' : supervisor.origin === 'adopted' ? 'shared with another window' : 'remote';
  const lines = [`**Glance** · ${model} on ${device} (${origin}${supervisor.pid !== null ? `, pid ${supervisor.pid}` : ''})`];
  if (sidecar === null) {
    return { text: '$(sync~spin) Glance: connecting', label: 'loading', tooltip: lines.join('\n\n'), severity: 'normal' };
  }
  lines.push(
    `Repository in context: ${formatTokens(sidecar.contextTokens)} tokens (${sidecar.files.inContext} of ${sidecar.files.known} files; ${sidecar.files.skipped} skipped), ${formatTokens(sidecar.cachedTokens)} cached`,
  );
  lines.push(`Queue: ${sidecar.queue.running} running, ${sidecar.queue.waiting} waiting`);
  if (last) lines.push(`Last ${last.kind}: ${Math.round(last.latencyMs)} ms, ${last.tokensPerSecond.toFixed(1)} tokens/s`);
  const tail = last ? ` · ${Math.round(last.latencyMs)} ms · ${last.tokensPerSecond.toFixed(0)} tok/s` : '';
  switch (sidecar.state) {
    case 'loading':
      return { text: '$(sync~spin) Glance: loading model', label: 'loading', tooltip: lines.join('\n\n'), severity: 'normal' };
    case 'indexing': {
      const pct = sidecar.indexing && sidecar.indexing.total > 0 ? Math.floor((100 * sidecar.indexing.done) / sidecar.indexing.total) : 0;
      return { text: `$(sync~spin) Glance: indexing ${pct}%`, label: 'indexing', tooltip: lines.join('\n\n'), severity: 'normal' };
    }
    case 'error':
      return {
        text: '$(error) Glance: error',
        label: 'error',
        tooltip: `${lines.join('\n\n')}\n\n**${sidecar.error ?? 'the sidecar reports an error'}**`,
        severity: 'error',
      };
    case 'ready':
      return {
        text: `$(check) Glance · ${model} · ${device} · ${formatTokens(sidecar.contextTokens)} tok${tail}${off}`,
        label: 'ready',
        tooltip: lines.join('\n\n'),
        severity: 'normal',
      };
  }
}
