#!/usr/bin/env node
// Check that the trained tokenizer behaves identically in the engine's pure-JS library
// (@huggingface/tokenizers 0.2.0) and in HF's native library (`tokenizers` 0.23.2, the same Rust
// code as the Python lib), and that decode(encode(x)) == x exactly.
//
//   cd training && npm ci && node tokenizer/check_roundtrip.mjs \
//       [--tokenizer data/tokenizer] [--heldout data/heldout.jsonl.xz] [--n 200] [--seed 1]
//
// Samples --n random held-out files (seeded), encodes each both as plain content and laid out as
// the corpus does (<|repo_name|>, <|file_sep|>path\n...), plus a list of edge cases (CRLF, tabs,
// emoji, astral chars, lone special tokens, chat template), and reports mismatches.  Also reports
// characters per token on all held-out TypeScript files.  Exit code 1 on any mismatch.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { readPackages, loadNative } from './corpus_io.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TRAINING = path.dirname(HERE);
const require = createRequire(import.meta.url);

const args = { tokenizer: path.join(TRAINING, 'data/tokenizer'), heldout: path.join(TRAINING, 'data/heldout.jsonl.xz'), n: 200, seed: 1 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, ''); const v = process.argv[i + 1];
  if (!(k in args)) throw new Error(`unknown argument --${k}`);
  args[k] = typeof args[k] === 'number' ? Number(v) : v;
}

function mulberry32(a) {
  return () => {
    a |= 0; a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function main() {
  const tjText = fs.readFileSync(path.join(args.tokenizer, 'tokenizer.json'), 'utf8');
  const tcfg = JSON.parse(fs.readFileSync(path.join(args.tokenizer, 'tokenizer_config.json'), 'utf8'));
  const native = loadNative().Tokenizer.fromString(tjText);
  const hf = require('@huggingface/tokenizers');
  const js = new hf.Tokenizer(JSON.parse(tjText), tcfg);
  const pkgVersion = (name) => {
    let d = path.dirname(require.resolve(name));
    while (!fs.existsSync(path.join(d, 'package.json')) || JSON.parse(fs.readFileSync(path.join(d, 'package.json'), 'utf8')).name !== name) d = path.dirname(d);
    return JSON.parse(fs.readFileSync(path.join(d, 'package.json'), 'utf8')).version;
  };
  const jsVer = pkgVersion('@huggingface/tokenizers');
  const nVer = pkgVersion('tokenizers');
  console.log(`@huggingface/tokenizers ${jsVer} (pure JS) vs tokenizers ${nVer} (native); vocab ${native.getVocabSize(true)}`);

  const files = [];
  let tsChars = 0; let tsTokens = 0; let tsBytes = 0;
  for await (const pkg of readPackages(args.heldout)) {
    for (const f of pkg.files) {
      files.push({ pkg: pkg.name, ...f });
      if (/\.(ts|tsx|mts|cts)$/.test(f.path) && !/\.d\.[mc]?ts$/.test(f.path)) {
        const enc = await native.encode(f.text, null, { addSpecialTokens: false });
        tsChars += f.text.length; tsBytes += Buffer.byteLength(f.text); tsTokens += enc.getLength();
      }
    }
  }
  const rnd = mulberry32(args.seed);
  const sample = [];
  const pool = files.slice();
  while (sample.length < Math.min(args.n, files.length)) sample.push(pool.splice(Math.floor(rnd() * pool.length), 1)[0]);

  const edge = [
    '', ' ', '\n', '\r\n', 'a\r\nb\r\n', '\t\tfoo();\n', '   \n\n  \n', 'x  ', 'héllo wörld ñ', '日本語のテキスト',
    'emoji 🚀🔥👍🏽 and 👨‍👩‍👧‍👦 family', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral', 'const s = `${a}${b}`;', "it's they're we've I'm you'll he'd",
    '0x1F 3.14e-10 1_000_000 ²³ ½ Ⅻ', '<|endoftext|>', 'a<|file_sep|>b', '<|fim_prefix|>pre<|fim_suffix|>suf<|fim_middle|>mid',
    '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n', '<|repo_name|>x\n<|file_sep|>a.ts\nexport {}\n<|endoftext|>',
    '<|pad|><|pad|>', '<|notaspecial|>', '\u00a0nbsp\u2028ls\u2029ps\u200bzw', '\ufeffbom', 'a\u0000b', '\\u0041 \\n',
    '     \t  \n\t\n ', 'foo\n    bar\n        baz\n', '/** @param {string} x */', '\u0301\u0301combining', 'ǅ ǈ titlecase',
  ];
  let ok = 0; let bad = 0; let tokens = 0;
  const problems = [];
  const check = async (label, text) => {
    const ne = await native.encode(text, null, { addSpecialTokens: false });
    const nIds = ne.getIds();
    const jIds = js.encode(text, { add_special_tokens: false }).ids;
    const nDec = await native.decode(nIds, false);
    // note: @huggingface/tokenizers 0.2.0 throws on decode([]) ("token_ids must be a non-empty array")
    const jDec = nIds.length ? js.decode(nIds, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : '';
    const sameIds = nIds.length === jIds.length && nIds.every((v, i) => v === jIds[i]);
    tokens += nIds.length;
    if (sameIds && nDec === text && jDec === text) { ok++; return; }
    bad++;
    let at = 0; while (at < Math.min(nIds.length, jIds.length) && nIds[at] === jIds[at]) at++;
    problems.push(`${label}: ids ${sameIds ? 'same' : `differ at ${at} (native ${nIds.length} / js ${jIds.length})`}, ` +
      `native decode ${nDec === text ? 'ok' : 'BAD'}, js decode ${jDec === text ? 'ok' : 'BAD'}`);
  };
  for (const f of sample) {
    await check(`${f.pkg}:${f.path}`, f.text);
    await check(`${f.pkg}:${f.path} (layout)`, `<|repo_name|>${f.pkg}\n<|file_sep|>${f.path}\n${f.text.endsWith('\n') ? f.text : f.text + '\n'}<|endoftext|>`);
  }
  for (let i = 0; i < edge.length; i++) await check(`edge#${i} ${JSON.stringify(edge[i]).slice(0, 40)}`, edge[i]);
  // chat template sanity: special ids are atomic
  const chat = '<|im_start|>user\nWhat does f do?<|im_end|>\n<|im_start|>assistant\n';
  const cids = js.encode(chat, { add_special_tokens: false }).ids;
  const imStart = js.encode('<|im_start|>', { add_special_tokens: false }).ids;
  if (imStart.length !== 1 || cids[0] !== imStart[0]) { bad++; problems.push('chat: <|im_start|> not a single id'); }

  for (const p of problems.slice(0, 30)) console.log('  MISMATCH', p);
  console.log(`round-trip: ${ok} ok, ${bad} mismatched, over ${sample.length} held-out files (x2: plain + layout) + ${edge.length} edge cases; ${tokens} tokens compared`);
  console.log(`held-out TypeScript: ${tsChars} chars, ${tsBytes} bytes, ${tsTokens} tokens -> ${(tsChars / tsTokens).toFixed(3)} chars/token (${(tsBytes / tsTokens).toFixed(3)} bytes/token)`);
  const summary = { ok, bad, files: sample.length, edge_cases: edge.length, tokens_compared: tokens, heldout_ts_chars: tsChars, heldout_ts_tokens: tsTokens, chars_per_token: tsChars / tsTokens, js_version: jsVer, native_version: nVer };
  fs.writeFileSync(path.join(args.tokenizer, 'roundtrip_report.json'), JSON.stringify(summary, null, 2) + '\n');
  process.exit(bad ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
