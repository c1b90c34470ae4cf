#!/usr/bin/env node
// Tokenise corpus packages with the native `tokenizers` binding and stream them to stdout as frames:
//   u32 LE name length, name (UTF-8), u32 LE token count, count x u16 LE token ids.
// Used by training/corpus/make_shards.py (--backend node).  Layout per FORMAT.md:
//   <|repo_name|>NAME\n  then per file  <|file_sep|>PATH\nTEXT(\n if TEXT lacks a final \n)  then <|endoftext|>
//   node tokenizer/encode_packages.mjs TOKENIZER_DIR CORPUS.jsonl.xz [--verify N]
import path from 'node:path';
import { readPackages, loadNative } from './corpus_io.mjs';

export function layoutBlocks(pkg) {
  const blocks = [`<|repo_name|>${pkg.name}\n`];
  for (const f of pkg.files) blocks.push(`<|file_sep|>${f.path}\n${f.text.endsWith('\n') ? f.text : f.text + '\n'}`);
  return blocks;
}

async function main() {
  const [tokDir, corpus, flag, nVerify] = process.argv.slice(2);
  const verify = flag === '--verify' ? parseInt(nVerify, 10) : 0;
  const tok = loadNative().Tokenizer.fromFile(path.join(tokDir, 'tokenizer.json'));
  const eot = tok.tokenToId('<|endoftext|>');
  if (tok.getVocabSize(true) > 65536) throw new Error('vocab too large for uint16');
  let i = 0;
  for await (const pkg of readPackages(corpus)) {
    const blocks = layoutBlocks(pkg);
    const encs = await tok.encodeBatch(blocks, { addSpecialTokens: false });
    let n = 1;
    for (const e of encs) n += e.getLength();
    const ids = new Uint16Array(n);
    let o = 0;
    for (const e of encs) { const a = e.getIds(); ids.set(a, o); o += a.length; }
    ids[o] = eot;
    if (i < verify) { // block-wise encoding must equal encoding the whole document string
      const whole = (await tok.encode(blocks.join('') + '<|endoftext|>', null, { addSpecialTokens: false })).getIds();
      if (whole.length !== n || whole.some((v, j) => v !== ids[j])) throw new Error(`layout mismatch in ${pkg.name}`);
      const back = await tok.decode(Array.from(ids), false);
      if (back !== blocks.join('') + '<|endoftext|>') throw new Error(`decode mismatch in ${pkg.name}`);
    }
    const name = Buffer.from(pkg.name, 'utf8');
    const head = Buffer.alloc(4 + name.length + 4);
    head.writeUInt32LE(name.length, 0); name.copy(head, 4); head.writeUInt32LE(n, 4 + name.length);
    if (!process.stdout.write(head)) await new Promise((r) => process.stdout.once('drain', r));
    if (!process.stdout.write(Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength))) await new Promise((r) => process.stdout.once('drain', r));
    i++;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main().catch((e) => { console.error(e); process.exit(1); });
