// Streaming reader for training/data/{train,heldout}.jsonl.xz (one package per line), via the xz CLI.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';

/** Async iterator over the package objects {name, version, licence, files:[{path, text}]} of a .jsonl(.xz) file. */
export async function* readPackages(path) {
  const child = path.endsWith('.xz')
    ? spawn('xz', ['-dc', path], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn('cat', [path], { stdio: ['ignore', 'pipe', 'inherit'] });
  const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim()) yield JSON.parse(line);
  }
}

/** The native HF `tokenizers` Node binding, from training/node_modules (npm ci in training/) or NODE_PATH. */
export function loadNative() {
  const require = createRequire(import.meta.url);
  return require('tokenizers');
}
