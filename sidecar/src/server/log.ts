// The sidecar's log: one line per event on stderr (stdout carries only the ready line), each request's lines
// tagged with its request id so a user-visible error can be traced to its details.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export class Log {
  constructor(private readonly min: LogLevel = 'info', private readonly sink: (line: string) => void = (l) => process.stderr.write(l)) {}

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.write('debug', msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.write('info', msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.write('warn', msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.write('error', msg, fields);
  }

  private write(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    if (ORDER[level] < ORDER[this.min]) return;
    const extra = fields ? ' ' + Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ') : '';
    this.sink(`${new Date().toISOString()} ${level.padEnd(5)} ${msg}${extra}\n`);
  }
}

let counter = 0;
/** Short ids that sort by time within one process: r1a2b-17. */
export function newRequestId(): string {
  counter++;
  return `r${(Date.now() % 0xfffff).toString(36)}-${counter}`;
}
