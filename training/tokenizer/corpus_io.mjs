// Streaming reader for training/data/{train,heldout}.jsonl.xz (one package per line), via the xz CLI.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';

/** Async iterator over the package objects {name, version, licence, files:[{path, text}]} of a .jsonl(.xz) file. */
export async function* readPackages(path) {
  // A missing or corrupt corpus file must stop the caller: xz / cat only print to stderr, and an empty stream
  // would otherwise read as a corpus of no packages (make_shards once wrote 0 tokens and exited 0 that way).
  if (!existsSync(path)) throw new Error(`corpus file not found: ${path}`);
  const child = path.endsWith('.xz')
    ? spawn('xz', ['-dc', path], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn('cat', [path], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.on('close', resolve));
  const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim()) yield JSON.parse(line);
  }
  const code = await exited;
  if (code !== 0) throw new Error(`reading ${path} failed (${path.endsWith('.xz') ? 'xz -dc' : 'cat'} exited with ${code})`);
}

/** The native HF `tokenizers` Node binding, from training/node_modules (npm ci in training/) or NODE_PATH. */
export function loadNative() {
  const require = createRequire(import.meta.url);
  return require('tokenizers');
}
