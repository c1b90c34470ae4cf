// npm run eval:completion -- --cases FILE [--model DIR] [--context file|layout] [--task fim|next] [--from N --to N]
//                            [--out FILE.jsonl]
//
// Single-line exact match of held-out lines through our engine (CPU or GPU, as `--device` says) with the prompt the
// sidecar builds: the current file only, or with the package's other files as the sidecar lays them out
// (`layoutRepository`, the product's own ranking and cut). The cases file comes from
// `python3 training/context_recall.py --write-cases FILE` (the held-out packages and the lines eval.py samples), and
// the prompts follow training/eval.py's `spm_*` / `next_*` tasks, so the "file" figures match eval.py's (the same
// model through PyTorch) and the "layout" ones measure the product's context. One JSON line per case to --out, a
// summary at the end. ~3.5 s per 8K-token prompt on the 2-core VM: run it where that is affordable.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { layoutRepository, specialIds, TokenCache } from '../sidecar/src/context/layout';
import { loadModelOnDevice, type DeviceChoice } from '../sidecar/src/engine/device';
import { arrangeFim } from '../sidecar/src/engine/fim';
import { loadTokenizer } from '../sidecar/src/engine/tokenizer';
import type { FileView } from '../sidecar/src/workspace/workspace';

interface CasesFile {
  packages: { name: string; files: { path: string; text: string }[] }[];
  /** [package index, file index, line index] */
  cases: [number, number, number][];
}

const PROMPT_TOKENS = 8192 - 64;   // eval.py: --ctx 8192 minus --max-new 64
const MAX_NEW = 64;

function readCases(file: string): CasesFile {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`--cases ${file}: ${(e as Error).message} (write it with training/context_recall.py --write-cases)`);
  }
  const c = raw as CasesFile;
  if (!Array.isArray(c?.packages) || !Array.isArray(c?.cases)) throw new Error(`--cases ${file}: expected {"packages": [...], "cases": [...]}`);
  for (const [i, [pi, fi, li]] of c.cases.entries()) {
    const lines = c.packages[pi]?.files[fi]?.text.split('\n');
    if (!lines || li <= 0 || li >= lines.length) throw new Error(`--cases ${file}: case ${i} points at no line (${pi}, ${fi}, ${li})`);
  }
  return c;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      cases: { type: 'string' },
      model: { type: 'string', default: path.resolve(__dirname, '..', '..', 'models', 'glance-tiny') },
      device: { type: 'string', default: 'cpu' },
      context: { type: 'string', default: 'layout' },
      task: { type: 'string', default: 'fim' },
      from: { type: 'string', default: '0' },
      to: { type: 'string' },
      out: { type: 'string' },
    },
  });
  if (!values.cases) throw new Error('--cases FILE is required (python3 training/context_recall.py --write-cases FILE)');
  if (values.context !== 'file' && values.context !== 'layout') throw new Error(`--context must be file or layout, got '${values.context}'`);
  if (values.task !== 'fim' && values.task !== 'next') throw new Error(`--task must be fim or next, got '${values.task}'`);
  const data = readCases(values.cases);
  const from = Number(values.from);
  const to = values.to === undefined ? data.cases.length : Math.min(Number(values.to), data.cases.length);
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || from > to) throw new Error(`--from / --to: bad range ${values.from}..${values.to}`);
  const tok = loadTokenizer(values.model!);
  if (!tok) throw new Error(`${values.model}: no tokenizer.json`);
  if (!['auto', 'cuda', 'cpu'].includes(values.device!)) throw new Error(`--device must be auto, cuda or cpu, got '${values.device}'`);
  const { model, device } = await loadModelOnDevice(values.model!, { device: values.device as DeviceChoice, attention: 'sparse' });
  process.stderr.write(`eval:completion: ${values.model} on ${device}, cases ${from}..${to} of ${values.cases}\n`);
  const special = specialIds(tok, model.config.eosTokenIds);
  if (special.fileSep === null || special.fimPrefix === null || special.fimSuffix === null || special.fimMiddle === null) {
    throw new Error(`${values.model}: the tokenizer lacks the file-separator or FIM tokens this evaluation uses`);
  }
  const stops = new Set(special.stops);
  const cache = new TokenCache(tok, special);
  const enc = (t: string): number[] => tok.encode(t, { specials: 'plain' });
  const out = values.out ? fs.openSync(values.out, 'w') : null;
  const view = (p: string, text: string): FileView => ({ uri: `file:///r/${p}`, path: p, text, hash: createHash('sha256').update(text).digest('hex'), lastEdited: 0 });
  let hits = 0;
  let ctxSum = 0;
  const t0 = Date.now();
  for (let ci = from; ci < to; ci++) {
    const [pi, fi, li] = data.cases[ci]!;
    const pkg = data.packages[pi]!;
    const f = pkg.files[fi]!;
    const lines = f.text.split('\n');
    const target = lines[li]!;
    const start = lines.slice(0, li).reduce((n, l) => n + l.length + 1, 0);
    const prefix = f.text.slice(0, start);
    const suffix = f.text.slice(start + target.length);
    const header = cache.repoHeader(pkg.name);
    const pathIds = enc(`${f.path}\n`);
    let block: number[];
    let visible: string;
    if (values.task === 'fim') {
      // eval.py build_prompts: the suffix keeps at least a quarter of the room, the prefix its end
      let P = enc(prefix);
      let S = enc(suffix);
      const room = PROMPT_TOKENS - header.length - pathIds.length - 4;
      if (P.length + S.length > room) {
        const ns = Math.min(S.length, Math.max(Math.floor(room / 4), room - P.length));
        S = S.slice(0, ns);
        P = room - ns > 0 ? P.slice(P.length - (room - ns)) : [];
      }
      const marks = { prefix: special.fimPrefix, suffix: special.fimSuffix, middle: special.fimMiddle };
      block = [special.fileSep, ...pathIds, ...arrangeFim('spm', marks, P, S)];
      visible = prefix + suffix;
    } else {
      let nb = enc(`${f.path}\n${f.text.slice(0, start - 1)}`);
      const room = PROMPT_TOKENS - header.length - 1;
      if (nb.length > room) nb = [...nb.slice(0, pathIds.length), ...nb.slice(nb.length - (room - pathIds.length))];
      block = [special.fileSep, ...nb];
      visible = f.text.slice(0, start);
    }
    let context: number[] = header;
    if (values.context === 'layout') {
      const views = pkg.files.map((g, j) => (j === fi ? view(g.path, visible) : view(g.path, g.text)));
      context = Array.from(layoutRepository(cache, pkg.name, views, `file:///r/${f.path}`, PROMPT_TOKENS - block.length).ids);
    }
    const ids = [...context, ...block];
    const seq = model.createSequence(ids.length + MAX_NEW + 1);
    let logits = seq.forward(Int32Array.from(ids), false);
    const generated: number[] = [];
    let text = '';
    for (let step = 0; step < MAX_NEW; step++) {
      let next = 0;
      for (let v = 1; v < logits.length; v++) if (logits[v]! > logits[next]!) next = v;
      if (stops.has(next)) break;
      generated.push(next);
      text = tok.decode(generated);
      if (values.task === 'fim' ? text.includes('\n') : text.slice(1).includes('\n') || !text.startsWith('\n')) break;
      logits = seq.forward(Int32Array.of(next), false);
    }
    const pred = values.task === 'fim' ? text.split('\n')[0]! : text.startsWith('\n') ? text.slice(1).split('\n')[0]! : null;
    const ok = pred !== null && pred.trim() === target.trim();
    hits += ok ? 1 : 0;
    ctxSum += context.length - header.length;
    if (out !== null) fs.writeSync(out, JSON.stringify({ case: ci, ok, target, pred, promptTokens: ids.length, contextTokens: context.length - header.length }) + '\n');
    const done = ci - from + 1;
    if (done % 10 === 0 || ci + 1 === to) {
      process.stderr.write(`\r${done}/${to - from} cases, ${hits} exact (${((100 * hits) / done).toFixed(1)}%), ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
  }
  process.stderr.write('\n');
  const n = Math.max(1, to - from);
  console.log(`| task | context | cases | exact match | mean context tokens |\n|---|---|---|---|---|`);
  console.log(`| ${values.task} | ${values.context} | ${to - from} | ${((100 * hits) / n).toFixed(1)}% (${hits}) | ${(ctxSum / n).toFixed(0)} |`);
  if (out !== null) fs.closeSync(out);
}

main().catch((e: unknown) => {
  console.error(`eval:completion: ${(e as Error).message}`);
  process.exit(1);
});
