// Request ids for the output channel: every request logs `[id] what … ms`.
let counter = 0;

export function nextRequestId(kind: string): string {
  counter = (counter + 1) % 1_000_000;
  return `${kind}-${Date.now().toString(36)}-${counter}`;
}
