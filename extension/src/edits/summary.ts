// Pure summary of per-block reports for messages and logs.
import type { FileEdit } from '../../../sidecar/src/protocol';

export interface ReportSummary {
  applied: number;
  failed: number;
  /** e.g. "3 of 4 blocks applied (1 fuzzy); block 2 failed: SEARCH text not found" */
  text: string;
}

export function summariseReports(files: readonly FileEdit[]): ReportSummary {
  let applied = 0;
  let failed = 0;
  let fuzzy = 0;
  let whitespace = 0;
  const failures: string[] = [];
  for (const f of files) {
    for (const b of f.blocks) {
      if (b.match === 'failed') {
        failed++;
        failures.push(`block ${b.index + 1} failed: ${b.message ?? 'no match'}`);
      } else {
        applied++;
        if (b.match === 'fuzzy') fuzzy++;
        if (b.match === 'whitespace') whitespace++;
      }
    }
  }
  const loose = [fuzzy > 0 ? `${fuzzy} fuzzy` : '', whitespace > 0 ? `${whitespace} whitespace-insensitive` : ''].filter((s) => s !== '');
  let text = `${applied} of ${applied + failed} blocks applied${loose.length > 0 ? ` (${loose.join(', ')})` : ''}`;
  if (failures.length > 0) text += `; ${failures.join('; ')}`;
  return { applied, failed, text };
}
