#!/usr/bin/env node
// Train the Glance byte-level BPE tokenizer here (no Python `tokenizers` needed).
//
//   cd training && npm ci && node tokenizer/train_tokenizer.mjs \
//       [--corpus data/train.jsonl.xz] [--out data/tokenizer] [--vocab 16384] [--min-freq 2]
//
// Why not the native binding's Tokenizer.train()?  `tokenizers` 0.23.2 for Node exposes only
// train(files) with the model's *default* trainer (vocab 30000, no special tokens, no initial
// alphabet, not configurable) and reads the files line by line, so no merge can span a newline
// ("\n    " -- newline + indentation, the most common whitespace in code -- would never become one
// token).  So: the native binding pre-tokenizes each whole file with the exact ByteLevel
// pre-tokenizer (use_regex, no prefix space) that encoding uses, and the merges are learnt here by
// the standard BPE algorithm (most frequent pair first; ties -> smallest (left id, right id), as the
// HF trainer does).  The result is an ordinary HF tokenizer.json (BPE + ByteLevel) that the Python
// `tokenizers` lib, the native Node binding and @huggingface/tokenizers (pure JS) all load.
//
// Id layout: 0..9 special tokens (tokenizer_spec.mjs), 10..265 the 256 byte symbols sorted by code
// point, then one id per merge, in merge order, up to --vocab ids in total.
// Only the training split is read (never held-out).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readPackages, loadNative } from './corpus_io.mjs';
import {
  SPECIAL_TOKENS, bytesToUnicode, tokenizerJson, tokenizerConfigJson, specialTokensMapJson,
} from './tokenizer_spec.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TRAINING = path.dirname(HERE);

function parseArgs(argv) {
  const a = {
    corpus: path.join(TRAINING, 'data/train.jsonl.xz'),
    out: path.join(TRAINING, 'data/tokenizer'),
    vocab: 16384,
    minFreq: 2,
    maxWordChars: 64, // pre-tokens longer than this are not used for training (rare; long literals)
  };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (k === '--corpus') a.corpus = v, i++;
    else if (k === '--out') a.out = v, i++;
    else if (k === '--vocab') a.vocab = parseInt(v, 10), i++;
    else if (k === '--min-freq') a.minFreq = parseInt(v, 10), i++;
    else if (k === '--max-word-chars') a.maxWordChars = parseInt(v, 10), i++;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!(a.vocab >= 1024 && a.vocab <= 65535)) throw new Error('--vocab must be in [1024, 65535] (uint16 shards)');
  if (/heldout/i.test(path.basename(a.corpus))) throw new Error('refusing to train on the held-out split');
  return a;
}

// ---------------------------------------------------------------- max-heap of (count, key)
class Heap {
  constructor() { this.c = []; this.k = []; }
  get size() { return this.c.length; }
  // a before b  <=>  higher count, or equal count and smaller key
  _lt(i, j) { return this.c[i] > this.c[j] || (this.c[i] === this.c[j] && this.k[i] < this.k[j]); }
  _swap(i, j) {
    const c = this.c[i]; this.c[i] = this.c[j]; this.c[j] = c;
    const k = this.k[i]; this.k[i] = this.k[j]; this.k[j] = k;
  }
  push(count, key) {
    this.c.push(count); this.k.push(key);
    let i = this.c.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this._lt(i, p)) break;
      this._swap(i, p); i = p;
    }
  }
  pop() {
    const top = [this.c[0], this.k[0]];
    const lc = this.c.pop(); const lk = this.k.pop();
    if (this.c.length) {
      this.c[0] = lc; this.k[0] = lk;
      let i = 0; const n = this.c.length;
      for (;;) {
        const l = 2 * i + 1; const r = l + 1; let m = i;
        if (l < n && this._lt(l, m)) m = l;
        if (r < n && this._lt(r, m)) m = r;
        if (m === i) break;
        this._swap(i, m); i = m;
      }
    }
    return top;
  }
}

async function countWords(args, native) {
  const pre = native.byteLevelPreTokenizer(false, true);
  const counts = new Map();
  let pkgs = 0; let files = 0; let bytes = 0; let skipped = 0;
  const t0 = Date.now();
  for await (const pkg of readPackages(args.corpus)) {
    pkgs++;
    for (const f of pkg.files) {
      // the text the model sees for a file, minus the special tokens: "path\n" + content
      const text = `${f.path}\n${f.text}`;
      files++; bytes += Buffer.byteLength(text);
      for (const [w] of pre.preTokenizeString(text)) {
        if (w.length > args.maxWordChars) { skipped++; continue; }
        counts.set(w, (counts.get(w) || 0) + 1);
      }
    }
    if (pkgs % 50 === 0) {
      console.log(`  pre-tokenized ${pkgs} packages, ${(bytes / 1e6).toFixed(1)} MB, ${counts.size} distinct words (${((Date.now() - t0) / 1000).toFixed(0)}s)`);
    }
  }
  console.log(`pre-tokenized ${pkgs} packages / ${files} files / ${(bytes / 1e6).toFixed(1)} MB: ${counts.size} distinct words, ${skipped} over-long words skipped (${((Date.now() - t0) / 1000).toFixed(0)}s)`);
  return counts;
}

function trainBpe(counts, args) {
  const t0 = Date.now();
  const nSpecial = SPECIAL_TOKENS.length;
  const alphabet = bytesToUnicode().slice().sort((x, y) => x.codePointAt(0) - y.codePointAt(0));
  const idToTok = [...SPECIAL_TOKENS, ...alphabet];
  const tokToId = new Map(idToTok.map((t, i) => [t, i]));
  const SHIFT = 65536; // pair key = left * SHIFT + right  (ids < 65536; lexicographic order = key order)

  // words -> one flat Int32Array of symbol ids (compacted in place as merges shrink words)
  const words = [...counts.entries()].filter(([, c]) => c > 0);
  const nW = words.length;
  let total = 0;
  for (const [w] of words) total += w.length;
  const syms = new Int32Array(total);
  const start = new Int32Array(nW); const len = new Int32Array(nW); const wc = new Float64Array(nW);
  let off = 0;
  for (let i = 0; i < nW; i++) {
    const [w, c] = words[i];
    start[i] = off; len[i] = w.length; wc[i] = c;
    for (let j = 0; j < w.length; j++) {
      const id = tokToId.get(w[j]);
      if (id === undefined) throw new Error(`char outside the byte-level alphabet: ${JSON.stringify(w[j])}`);
      syms[off++] = id;
    }
  }
  words.length = 0;

  const pairCount = new Map(); // key -> weighted count
  const pairWords = new Map(); // key -> word indices (may hold stale entries; checked on use)
  const addPair = (key, c, w) => {
    pairCount.set(key, (pairCount.get(key) || 0) + c);
    let arr = pairWords.get(key);
    if (!arr) pairWords.set(key, (arr = []));
    if (arr.length === 0 || arr[arr.length - 1] !== w) arr.push(w);
  };
  for (let w = 0; w < nW; w++) {
    const s = start[w]; const L = len[w]; const c = wc[w];
    for (let i = 0; i + 1 < L; i++) addPair(syms[s + i] * SHIFT + syms[s + i + 1], c, w);
  }
  const heap = new Heap();
  for (const [key, c] of pairCount) heap.push(c, key);
  console.log(`BPE: ${nW} words, ${total} symbols, ${pairCount.size} initial pairs (${((Date.now() - t0) / 1000).toFixed(1)}s)`);

  const merges = [];
  const stamp = new Int32Array(nW).fill(-1);
  const touched = new Set();
  let iter = 0;
  while (idToTok.length < args.vocab && heap.size) {
    const [c, key] = heap.pop();
    const cur = pairCount.get(key) || 0;
    if (c !== cur) { if (cur > 0) heap.push(cur, key); continue; }
    if (cur < args.minFreq) break;
    const a = Math.floor(key / SHIFT); const b = key % SHIFT;
    const newTok = idToTok[a] + idToTok[b];
    let nid = tokToId.get(newTok);
    if (nid === undefined) { nid = idToTok.length; idToTok.push(newTok); tokToId.set(newTok, nid); }
    merges.push([idToTok[a], idToTok[b]]);
    iter++;
    const ws = pairWords.get(key) || [];
    pairWords.delete(key);
    touched.clear();
    for (const w of ws) {
      if (stamp[w] === iter) continue;
      stamp[w] = iter;
      const s = start[w]; const L = len[w]; const cw = wc[w];
      let has = false;
      for (let i = 0; i + 1 < L; i++) if (syms[s + i] === a && syms[s + i + 1] === b) { has = true; break; }
      if (!has) continue;
      for (let i = 0; i + 1 < L; i++) {
        const k = syms[s + i] * SHIFT + syms[s + i + 1];
        pairCount.set(k, pairCount.get(k) - cw);
      }
      let j = 0;
      for (let i = 0; i < L; ) {
        if (i + 1 < L && syms[s + i] === a && syms[s + i + 1] === b) { syms[s + j++] = nid; i += 2; }
        else syms[s + j++] = syms[s + i++];
      }
      len[w] = j;
      for (let i = 0; i + 1 < j; i++) {
        const l = syms[s + i]; const r = syms[s + i + 1];
        const k = l * SHIFT + r;
        if (l === nid || r === nid) { addPair(k, cw, w); touched.add(k); }
        else pairCount.set(k, pairCount.get(k) + cw);
      }
    }
    for (const k of touched) { const v = pairCount.get(k); if (v > 0) heap.push(v, k); }
    if (iter % 2000 === 0) {
      console.log(`  merge ${iter}: vocab ${idToTok.length}, last ${JSON.stringify(newTok)} x${cur} (${((Date.now() - t0) / 1000).toFixed(0)}s)`);
    }
  }
  console.log(`BPE: ${merges.length} merges, vocab ${idToTok.length} (${((Date.now() - t0) / 1000).toFixed(0)}s)`);
  const vocab = {};
  idToTok.forEach((t, i) => { vocab[t] = i; });
  return { vocab, merges };
}

async function main() {
  const args = parseArgs(process.argv);
  const native = loadNative();
  const counts = await countWords(args, native);
  const { vocab, merges } = trainBpe(counts, args);
  fs.mkdirSync(args.out, { recursive: true });
  const tj = tokenizerJson(vocab, merges);
  fs.writeFileSync(path.join(args.out, 'tokenizer.json'), JSON.stringify(tj, null, 1) + '\n');
  fs.writeFileSync(path.join(args.out, 'tokenizer_config.json'), JSON.stringify(tokenizerConfigJson(), null, 2) + '\n');
  fs.writeFileSync(path.join(args.out, 'special_tokens_map.json'), JSON.stringify(specialTokensMapJson(), null, 2) + '\n');
  // sanity: the native lib loads it and round-trips a snippet with special tokens
  const tok = native.Tokenizer.fromFile(path.join(args.out, 'tokenizer.json'));
  const sample = '<|repo_name|>demo\n<|file_sep|>src/a.ts\nexport const x = (a: number): string => `${a}`;\n';
  const enc = await tok.encode(sample, null, { addSpecialTokens: false });
  const back = await tok.decode(enc.getIds(), false);
  if (back !== sample) throw new Error(`round-trip failed: ${JSON.stringify(back)}`);
  console.log(`wrote ${args.out}/tokenizer.json (${tok.getVocabSize(true)} ids); sample -> ${enc.getIds().length} tokens, round-trip ok`);
}

main().catch((e) => { console.error(e); process.exit(1); });
