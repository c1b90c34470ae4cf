// `glance` command line: logits, generate, info. Usage errors exit 2; engine errors (GlanceError) print
// `glance: <message>` and exit 1. stdout carries only the command's output; progress goes to stderr, and only when
// stderr is a terminal or --verbose is given.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import type { BackendInfo, NativeAddon } from '../native/contract';
import { readConfig } from '../engine/config';
import { GlanceError, isGlanceError } from '../engine/errors';
import { repositoryFrame } from '../context/prompts';
import { checkPromptIds, generate, type ModelLike } from '../engine/generate';
import type { SamplerOptions } from '../engine/sampling';
import { loadTokenizer, type Tokenizer } from '../engine/tokenizer';
import type { ModelConfig } from '../engine/types';
import { inspectWeights, parameterCounts, type CheckpointWeights } from '../engine/weights';
import { cpuKernels, findProjectRoot } from '../native/index';
import { runServe } from './serve';

// ---------------------------------------------------------------------------------------------------------------
// I/O

export interface CliIo {
  /** writes to stdout, resolving once the data is handed off (respects back-pressure) */
  out(text: string): Promise<void>;
  err(text: string): void;
  readonly stdoutIsTTY: boolean;
  readonly stderrIsTTY: boolean;
}

function processIo(): CliIo {
  // A reader that goes away (`glance logits … | head`) is not an error: stop quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    process.stderr.write(`glance: cannot write to stdout: ${e.message}\n`);
    process.exit(1);
  });
  return {
    out: (text) =>
      new Promise<void>((resolve, reject) => {
        const ok = process.stdout.write(text, (e) => (e && (e as NodeJS.ErrnoException).code !== 'EPIPE' ? reject(e) : undefined));
        if (ok) resolve();
        else process.stdout.once('drain', () => resolve());
      }),
    err: (text) => {
      process.stderr.write(text);
    },
    stdoutIsTTY: process.stdout.isTTY === true,
    stderrIsTTY: process.stderr.isTTY === true,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// argument parsing

export class UsageError extends Error {
  constructor(message: string, readonly command: CommandName | null = null) {
    super(message);
    this.name = 'UsageError';
  }
}

export type CommandName = 'logits' | 'generate' | 'info';
export type Attention = 'sparse' | 'dense';
export type IndexerPrecision = 'fp32' | 'fp8';
export type KvCache = 'fp32' | 'bf16' | 'fp8';

interface Common {
  model: string | null;
  verbose: boolean;
  /** --device (default auto: CUDA when a device is usable, else the CPU); set only when given */
  device?: 'auto' | 'cuda' | 'cpu';
  /** --gpu-memory budget as given ("24GiB", "0.8"); set only when given */
  gpuMemory?: string;
  /** --kv-cache (logits, generate): the latent cache dtype; set only when given */
  kvCache?: KvCache;
}

export interface LogitsCommand extends Common {
  command: 'logits';
  ids: number[];
  attention: Attention;
  indexer: IndexerPrecision;
}

export interface GenerateCommand extends Common {
  command: 'generate';
  prompt: string | null;
  ids: number[] | null;
  maxTokens: number;
  greedy: boolean;
  temperature: number | null;
  topP: number | null;
  topK: number | null;
  repetitionPenalty: number | null;
  seed: number | null;
  stop: string[];
  json: boolean;
  attention: Attention;
  indexer: IndexerPrecision;
  /** frame --prompt as the start of this file of a one-file repository (models with the repository tokens);
   *  null: prompt.ts */
  file: string | null;
  /** send --prompt bare, without that frame */
  raw: boolean;
}

export interface InfoCommand extends Common {
  command: 'info';
  json: boolean;
}

export type Command = LogitsCommand | GenerateCommand | InfoCommand;

export type Parsed = { kind: 'help'; text: string } | { kind: 'run'; command: Command };

export const USAGE = `usage: glance <command> [options]

commands:
  serve      run the sidecar the editor talks to (LSP over WebSocket)
  generate   generate text from a prompt (or token ids), streamed to stdout
  logits     print the logits of every input position as JSON
  info       describe a model: architecture, parameters, weights, backends

Run "glance <command> --help" for a command's options.
The model defaults to models/glance-tiny in the package (--model DIR picks another).
`;

const COMMON_HELP = `  --model DIR           model directory in Hugging Face layout (default: models/glance-tiny)
  --device D            auto (default: CUDA when a GPU is usable, else the CPU), cuda, or cpu
  --gpu-memory SIZE     GPU memory budget for weights + KV caches, e.g. 24GiB or 0.8 of the device (default 90% of free)
  --verbose, -v         show load progress on stderr even when it is not a terminal
  --help, -h            show this help
`;

const KV_CACHE_HELP = `  --kv-cache DTYPE      latent cache rows: fp32, bf16 (default: the checkpoint's precision) or fp8 (CPU only:
                        DeepSeek's deployment form, e4m3 with a power-of-two scale per tile, bf16 rope part)
`;

export const COMMAND_HELP: Record<CommandName, string> = {
  logits: `usage: glance logits --ids 5,17,3 [--model DIR] [--attention sparse|dense] [--kv-cache fp32|bf16|fp8]

Runs the token ids through the model and prints {"logits": [[…], …]}: one row of vocab_size logits per input
position, every value at full float32 precision.

  --ids LIST            comma-separated token ids (required)
  --attention MODE      sparse (DSA top-k, the default) or dense (attend to every position)
  --indexer PRECISION   fp32 (default here: exactly HF transformers' indexer math) or fp8 (DeepSeek's
                        deployment form: Hadamard-rotated e4m3 keys, a quarter of the bytes)
${KV_CACHE_HELP}${COMMON_HELP}`,
  generate: `usage: glance generate (--prompt TEXT | --ids 5,17,3) --max-tokens N [options]

Generates up to N tokens after the prompt and streams the text to stdout, or with --json prints
{"ids": […], "text": "…"} at the end (ids: the generated tokens).

  --prompt TEXT         prompt text (needs tokenizer.json in the model directory)
  --ids LIST            prompt as comma-separated token ids
  --file NAME           for models trained on repositories (glance-tiny): the prompt is the start of
                        file NAME (default prompt.ts) of a one-file repository, as the editor's files are
                        laid out; a bare prompt at position 0 is something such a model never saw
  --raw                 send the prompt bare, without that frame
  --max-tokens N        tokens to generate at most (required)
  --greedy              pick the most likely token every step (same as --temperature 0)
  --temperature T       sampling temperature ≥ 0 (default: generation_config.json, else 1)
  --top-p P             nucleus sampling mass in (0, 1] (default: generation_config.json, else 1)
  --top-k K             sample among the K most likely tokens; 0 = off (default 0)
  --repetition-penalty R  penalise tokens already in the context, R > 0; 1 = off (default 1)
  --seed S              random seed (non-negative integer) for reproducible sampling
  --stop STR            stop when the text contains STR (repeatable); STR itself is not printed
  --json                print {"ids": […], "text": "…"} when done instead of streaming
  --attention MODE      sparse (default) or dense
  --indexer PRECISION   fp8 (default: DeepSeek's FP8 key cache, fastest) or fp32 (exactly HF's math)
${KV_CACHE_HELP}${COMMON_HELP}`,
  info: `usage: glance info [--model DIR] [--json]

Describes the model: type, layers, hidden size, heads, MLA dimensions, indexer, experts, context, RoPE,
weight dtypes and bytes, total and active (per token) parameters, the tokenizer, and the native backends.

  --json                machine-readable output
${COMMON_HELP}`,
};

const OPTION_SPECS = {
  logits: {
    ids: { type: 'string' },
    attention: { type: 'string' },
    indexer: { type: 'string' },
    'kv-cache': { type: 'string' },
  },
  generate: {
    prompt: { type: 'string' },
    ids: { type: 'string' },
    'max-tokens': { type: 'string' },
    greedy: { type: 'boolean' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    'top-k': { type: 'string' },
    'repetition-penalty': { type: 'string' },
    seed: { type: 'string' },
    stop: { type: 'string', multiple: true },
    json: { type: 'boolean' },
    attention: { type: 'string' },
    indexer: { type: 'string' },
    'kv-cache': { type: 'string' },
    file: { type: 'string' },
    raw: { type: 'boolean' },
  },
  info: {
    json: { type: 'boolean' },
  },
} as const;

const COMMON_SPECS = {
  model: { type: 'string' },
  device: { type: 'string' },
  'gpu-memory': { type: 'string' },
  verbose: { type: 'boolean', short: 'v' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parseIntArg(name: string, v: string, min: number, cmd: CommandName): number {
  if (!/^\s*-?\d+\s*$/.test(v)) throw new UsageError(`--${name} must be an integer; got ${JSON.stringify(v)}`, cmd);
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer ≥ ${min}; got ${v}`, cmd);
  return n;
}

function parseFloatArg(name: string, v: string, cmd: CommandName, ok: (x: number) => boolean, expected: string): number {
  const n = v.trim() === '' ? NaN : Number(v);
  if (!Number.isFinite(n) || !ok(n)) throw new UsageError(`--${name} must be ${expected}; got ${JSON.stringify(v)}`, cmd);
  return n;
}

/** "5,17,3" → [5, 17, 3]. */
export function parseIds(v: string, cmd: CommandName): number[] {
  const parts = v.split(',').map((s) => s.trim());
  if (parts.length === 0 || (parts.length === 1 && parts[0] === '')) throw new UsageError('--ids must list at least one token id, e.g. --ids 5,17,3', cmd);
  return parts.map((p, i) => {
    if (!/^\d+$/.test(p)) throw new UsageError(`--ids: entry ${i + 1} (${JSON.stringify(p)}) is not a non-negative integer token id`, cmd);
    const n = Number(p);
    if (!Number.isSafeInteger(n)) throw new UsageError(`--ids: entry ${i + 1} (${p}) is too large`, cmd);
    return n;
  });
}

function parseAttention(v: string | undefined, cmd: CommandName): Attention {
  if (v === undefined) return 'sparse';
  if (v !== 'sparse' && v !== 'dense') throw new UsageError(`--attention must be "sparse" or "dense"; got ${JSON.stringify(v)}`, cmd);
  return v;
}

function parseIndexer(v: string | undefined, fallback: IndexerPrecision, cmd: CommandName): IndexerPrecision {
  if (v === undefined) return fallback;
  if (v !== 'fp32' && v !== 'fp8') throw new UsageError(`--indexer must be "fp32" or "fp8"; got ${JSON.stringify(v)}`, cmd);
  return v;
}

/** Parses argv (without node and the script). Throws UsageError. */
export function parseCommandLine(argv: readonly string[]): Parsed {
  if (argv.length === 0) throw new UsageError('no command given');
  const first = argv[0]!;
  if (first === '--help' || first === '-h' || first === 'help') {
    const topic = argv[1];
    if (first === 'help' && topic && topic in COMMAND_HELP) return { kind: 'help', text: COMMAND_HELP[topic as CommandName] };
    return { kind: 'help', text: USAGE };
  }
  if (!(first in OPTION_SPECS)) {
    throw new UsageError(first.startsWith('-') ? `expected a command before ${first}` : `unknown command ${JSON.stringify(first)}`);
  }
  const cmd = first as CommandName;
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    const r = parseArgs({
      args: argv.slice(1) as string[],
      options: { ...COMMON_SPECS, ...OPTION_SPECS[cmd] },
      strict: true,
      allowPositionals: false,
    });
    values = r.values as Record<string, string | boolean | string[] | undefined>;
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument.*$/s, ''), cmd);
  }
  if (values.help) return { kind: 'help', text: COMMAND_HELP[cmd] };
  const common: Common = { model: (values.model as string | undefined) ?? null, verbose: values.verbose === true };
  if (common.model === '') throw new UsageError('--model needs a directory', cmd);
  const str = (k: string): string | undefined => values[k] as string | undefined;
  const device = str('device');
  if (device !== undefined) {
    if (device !== 'auto' && device !== 'cuda' && device !== 'cpu') throw new UsageError(`--device must be auto, cuda or cpu; got ${JSON.stringify(device)}`, cmd);
    common.device = device;
  }
  if (str('gpu-memory') !== undefined) common.gpuMemory = str('gpu-memory');
  const kvCache = str('kv-cache');
  if (kvCache !== undefined) {
    if (kvCache !== 'fp32' && kvCache !== 'bf16' && kvCache !== 'fp8') throw new UsageError(`--kv-cache must be fp32, bf16 or fp8; got ${JSON.stringify(kvCache)}`, cmd);
    common.kvCache = kvCache;
  }

  if (cmd === 'info') return { kind: 'run', command: { ...common, command: 'info', json: values.json === true } };

  if (cmd === 'logits') {
    const ids = str('ids');
    if (ids === undefined) throw new UsageError('logits needs --ids, e.g. --ids 5,17,3', cmd);
    return { kind: 'run', command: { ...common, command: 'logits', ids: parseIds(ids, cmd), attention: parseAttention(str('attention'), cmd), indexer: parseIndexer(str('indexer'), 'fp32', cmd) } };
  }

  // generate
  const prompt = str('prompt');
  const idsArg = str('ids');
  if ((prompt === undefined) === (idsArg === undefined)) {
    throw new UsageError('generate needs exactly one of --prompt TEXT or --ids LIST', cmd);
  }
  const mt = str('max-tokens');
  if (mt === undefined) throw new UsageError('generate needs --max-tokens N', cmd);
  if (values.raw === true && str('file') !== undefined) throw new UsageError('--raw and --file contradict each other; give one', cmd);
  if ((values.raw === true || str('file') !== undefined) && prompt === undefined) {
    throw new UsageError('--raw and --file apply to --prompt text, not to --ids', cmd);
  }
  const file = str('file');
  if (file !== undefined && !/[^/\\.]/.test(file)) {
    throw new UsageError(`--file must name a file, e.g. src/app.ts; got ${JSON.stringify(file)}`, cmd);
  }
  const greedy = values.greedy === true;
  const temperature = str('temperature');
  if (greedy && temperature !== undefined) throw new UsageError('--greedy and --temperature contradict each other; give one', cmd);
  const opt = <T>(k: string, f: (v: string) => T): T | null => {
    const v = str(k);
    return v === undefined ? null : f(v);
  };
  return {
    kind: 'run',
    command: {
      ...common,
      command: 'generate',
      prompt: prompt ?? null,
      ids: idsArg === undefined ? null : parseIds(idsArg, cmd),
      maxTokens: parseIntArg('max-tokens', mt, 0, cmd),
      greedy,
      temperature: opt('temperature', (v) => parseFloatArg('temperature', v, cmd, (x) => x >= 0, 'a number ≥ 0')),
      topP: opt('top-p', (v) => parseFloatArg('top-p', v, cmd, (x) => x > 0 && x <= 1, 'a number in (0, 1]')),
      topK: opt('top-k', (v) => parseIntArg('top-k', v, 0, cmd)),
      repetitionPenalty: opt('repetition-penalty', (v) => parseFloatArg('repetition-penalty', v, cmd, (x) => x > 0, 'a number > 0')),
      seed: opt('seed', (v) => parseIntArg('seed', v, 0, cmd)),
      stop: (values.stop as string[] | undefined) ?? [],
      json: values.json === true,
      attention: parseAttention(str('attention'), cmd),
      indexer: parseIndexer(str('indexer'), 'fp8', cmd),
      file: str('file') ?? null,
      raw: values.raw === true,
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// model directory, native addon, model loading (resolved lazily, so that --help and info work without the addon)

export const DEFAULT_MODEL = path.join('models', 'glance-tiny');

export function resolveModelDir(model: string | null): string {
  if (model !== null) {
    const dir = path.resolve(model);
    if (!fs.existsSync(dir)) throw new GlanceError('missing_file', `model directory ${dir} does not exist`, { dir });
    if (!fs.statSync(dir).isDirectory()) throw new GlanceError('missing_file', `${dir} is not a directory (--model wants a model directory)`, { dir });
    return dir;
  }
  const root = findProjectRoot();
  const dir = root ? path.join(root, DEFAULT_MODEL) : path.resolve(DEFAULT_MODEL);
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    throw new GlanceError(
      'missing_file',
      `no --model given, and the default model ${dir} does not exist yet (the embedded model has not been built); ` +
        'pass --model DIR with a Hugging Face model directory',
      { dir },
    );
  }
  return dir;
}

function loadNativeAddon(): NativeAddon {
  let mod: { loadNative?: unknown };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require('../native/index') as { loadNative?: unknown };
  } catch (e) {
    throw new GlanceError('native_unavailable', `the native addon is not available: ${(e as Error).message.split('\n')[0]}`, {}, { cause: e });
  }
  if (typeof mod.loadNative !== 'function') throw new GlanceError('native_unavailable', 'the native addon module has no loadNative()');
  try {
    return (mod.loadNative as () => NativeAddon)();
  } catch (e) {
    if (e instanceof GlanceError) throw e;
    throw new GlanceError('native_unavailable', `the native addon could not be loaded: ${(e as Error).message.split('\n')[0]}`, {}, { cause: e });
  }
}

export type LoadModel = (dir: string, opts: { attention: Attention; indexerPrecision?: IndexerPrecision; onProgress?: (done: number, total: number, what: string) => void }) => Promise<ModelLike>;

/** What the CLI loads lazily; tests inject fakes. */
export interface CliDeps {
  loadModel?: LoadModel;
  loadNative?: () => NativeAddon;
}

function modelLoader(deps: CliDeps): LoadModel {
  if (deps.loadModel) return deps.loadModel;
  let mod: { loadModel?: unknown };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require('../engine/model') as { loadModel?: unknown };
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0] ?? '';
    const code = /native/.test(msg) ? 'native_unavailable' : 'io';
    throw new GlanceError(code, `the forward pass could not be loaded: ${msg}`, {}, { cause: e });
  }
  if (typeof mod.loadModel !== 'function') throw new GlanceError('io', 'engine/model has no loadModel()');
  return mod.loadModel as LoadModel;
}

/** Loads through engine/device.ts (--device, --gpu-memory); says where the model runs when verbose, and why the
 *  GPU was not used when --device cuda fell back or when verbose. */
function deviceLoader(io: CliIo, verbose: boolean, target: Pick<Common, 'device' | 'gpuMemory' | 'kvCache'>): LoadModel {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { loadModelOnDevice } = require('../engine/device') as typeof import('../engine/device');
  return async (dir, opts) => {
    const r = await loadModelOnDevice(dir, {
      device: target.device ?? 'auto',
      ...(target.gpuMemory !== undefined ? { gpuMemory: target.gpuMemory } : {}),
      ...(target.kvCache !== undefined ? { kvCache: target.kvCache } : {}),
      attention: opts.attention,
      ...(opts.indexerPrecision ? { indexerPrecision: opts.indexerPrecision } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    if (r.fallback && (verbose || target.device === 'cuda')) io.err(`${r.fallback}\n`);
    if (verbose) io.err(`running on ${r.device}\n`);
    return r.model;
  };
}

function progressReporter(io: CliIo, verbose: boolean): ((done: number, total: number, what: string) => void) | undefined {
  if (!io.stderrIsTTY && !verbose) return undefined;
  let lastPct = -1;
  return (done, total, what) => {
    const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
    if (io.stderrIsTTY) {
      io.err(`\rloading ${what} ${done}/${total} (${pct}%)\x1b[K${done >= total ? '\n' : ''}`);
    } else if (pct >= lastPct + 10 || done >= total) {
      lastPct = pct;
      io.err(`loading ${what} ${done}/${total} (${pct}%)\n`);
    }
  };
}

async function openModel(
  dir: string, attention: Attention, indexerPrecision: IndexerPrecision, io: CliIo, verbose: boolean, deps: CliDeps,
  target: Pick<Common, 'device' | 'gpuMemory' | 'kvCache'> = {},
): Promise<ModelLike> {
  const load = deps.loadModel ? modelLoader(deps) : deviceLoader(io, verbose, target);
  const t0 = Date.now();
  const onProgress = progressReporter(io, verbose);
  const model = await load(dir, onProgress ? { attention, indexerPrecision, onProgress } : { attention, indexerPrecision });
  if (verbose) io.err(`loaded ${dir} in ${((Date.now() - t0) / 1000).toFixed(2)} s\n`);
  return model;
}

// ---------------------------------------------------------------------------------------------------------------
// commands

function fmtFloat(v: number): string {
  return Number.isFinite(v) ? String(v) : 'null';
}

async function runLogits(c: LogitsCommand, io: CliIo, deps: CliDeps): Promise<number> {
  const dir = resolveModelDir(c.model);
  const config = readConfig(dir);
  const ids = checkPromptIds(c.ids, config.vocabSize);
  if (ids.length > config.maxPositionEmbeddings) {
    throw new GlanceError(
      'context_overflow',
      `${ids.length} input tokens exceed the model's context of ${config.maxPositionEmbeddings} tokens (max_position_embeddings)`,
    );
  }
  const model = await openModel(dir, c.attention, c.indexer, io, c.verbose, deps, c);
  const seq = model.createSequence(ids.length);
  const logits = seq.forward(ids, true);
  const V = model.config.vocabSize;
  if (logits.length !== ids.length * V) {
    throw new Error(`forward returned ${logits.length} logits for ${ids.length} positions × vocab ${V}`);
  }
  let nonFinite = 0;
  await io.out('{"logits": [');
  for (let t = 0; t < ids.length; t++) {
    const parts = new Array<string>(V);
    for (let j = 0; j < V; j++) {
      const v = logits[t * V + j]!;
      if (!Number.isFinite(v)) nonFinite++;
      parts[j] = fmtFloat(v);
    }
    await io.out(`${t > 0 ? ',' : ''}[${parts.join(',')}]`);
  }
  await io.out(']}\n');
  if (nonFinite > 0) io.err(`glance: warning: ${nonFinite} logits are NaN or infinite (written as null)\n`);
  return 0;
}

interface GenerationDefaults {
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
}

/** Sampling defaults from generation_config.json (do_sample false → greedy). Invalid entries are ignored. */
export function readGenerationDefaults(dir: string): GenerationDefaults {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return {};
  let j: unknown;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return {};
  }
  if (typeof j !== 'object' || j === null) return {};
  const g = j as Record<string, unknown>;
  const num = (v: unknown, ok: (x: number) => boolean): number | undefined => (typeof v === 'number' && Number.isFinite(v) && ok(v) ? v : undefined);
  const out: GenerationDefaults = {};
  const t = g.do_sample === false ? 0 : num(g.temperature, (x) => x >= 0);
  if (t !== undefined) out.temperature = t;
  const p = num(g.top_p, (x) => x > 0 && x <= 1);
  if (p !== undefined) out.topP = p;
  const k = num(g.top_k, (x) => Number.isInteger(x) && x >= 0);
  if (k !== undefined) out.topK = k;
  const r = num(g.repetition_penalty, (x) => x > 0);
  if (r !== undefined) out.repetitionPenalty = r;
  return out;
}

async function runGenerate(c: GenerateCommand, io: CliIo, deps: CliDeps): Promise<number> {
  const dir = resolveModelDir(c.model);
  const config = readConfig(dir);
  const tokenizer = loadTokenizer(dir);
  let promptIds: number[];
  if (c.prompt !== null) {
    if (!tokenizer) {
      throw new GlanceError('no_tokenizer', `--prompt needs a tokenizer, and ${dir} has no tokenizer.json; pass token ids with --ids instead`);
    }
    const frame = c.raw ? null : repositoryFrame(tokenizer, c.file ?? 'prompt.ts');
    promptIds = [...(tokenizer.addBos && tokenizer.bosId !== null ? [tokenizer.bosId] : []), ...(frame ?? []), ...tokenizer.encode(c.prompt)];
  } else {
    promptIds = c.ids ?? [];
  }
  if (c.stop.length > 0 && !tokenizer) {
    throw new GlanceError('no_tokenizer', `--stop needs a tokenizer, and ${dir} has no tokenizer.json`);
  }
  checkPromptIds(promptIds, config.vocabSize);
  const needed = promptIds.length + c.maxTokens;
  if (needed > config.maxPositionEmbeddings) {
    throw new GlanceError(
      'context_overflow',
      `prompt (${promptIds.length} tokens) + --max-tokens (${c.maxTokens}) = ${needed}, which exceeds the model's context of ` +
        `${config.maxPositionEmbeddings} tokens (max_position_embeddings)`,
    );
  }
  const defaults = readGenerationDefaults(dir);
  const sampling: SamplerOptions = {
    temperature: c.greedy ? 0 : (c.temperature ?? defaults.temperature ?? 1),
    topP: c.topP ?? defaults.topP ?? 1,
    topK: c.topK ?? defaults.topK ?? 0,
    repetitionPenalty: c.repetitionPenalty ?? defaults.repetitionPenalty ?? 1,
  };
  if (c.seed !== null) sampling.seed = c.seed;

  const model = await openModel(dir, c.attention, c.indexer, io, c.verbose, deps, c);
  const controller = new AbortController();
  const onSigint = (): void => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  const ids: number[] = [];
  let text = '';
  const streamIds = !c.json && !tokenizer;
  if (streamIds && c.verbose) io.err('(no tokenizer.json: printing token ids)\n');
  try {
    const gen = generate(model, tokenizer, promptIds, { ...sampling, maxTokens: c.maxTokens, stop: c.stop, signal: controller.signal });
    for await (const step of gen) {
      ids.push(step.id);
      text += step.text;
      if (c.json) continue;
      if (streamIds) await io.out(`${ids.length > 1 ? ' ' : ''}${step.id}`);
      else if (step.text) await io.out(step.text);
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
  if (c.json) {
    await io.out(`{"ids": ${JSON.stringify(ids)}, "text": ${JSON.stringify(text)}}\n`);
  } else if (streamIds || io.stdoutIsTTY) {
    await io.out('\n');
  }
  return controller.signal.aborted ? 130 : 0;
}

function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(2)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

/** Everything `info` reports, as plain data. */
export function describeModel(
  dir: string,
  config: ModelConfig,
  weights: CheckpointWeights,
  tokenizer: Tokenizer | null,
  backends: BackendInfo | { error: string },
): Record<string, unknown> {
  const counts = parameterCounts(config);
  const inactive = counts.total - counts.active;
  const moeLayers = config.mlpLayerTypes.filter((t) => t === 'sparse').length;
  const raw = config.raw;
  const isDict = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length > 0;
  const ropeDict: Record<string, unknown> = isDict(raw.rope_scaling) ? raw.rope_scaling : isDict(raw.rope_parameters) ? raw.rope_parameters : {};
  const extrasByPrefix = new Map<string, number>();
  for (const e of weights.extras) {
    const m = /^model\.layers\.(\d+)\./.exec(e);
    const key = m ? `model.layers.${m[1]}.*` : e;
    extrasByPrefix.set(key, (extrasByPrefix.get(key) ?? 0) + 1);
  }
  return {
    dir,
    modelType: config.modelType,
    architectures: Array.isArray(raw.architectures) ? raw.architectures : null,
    layers: config.numLayers,
    denseLayers: config.numLayers - moeLayers,
    moeLayers,
    hiddenSize: config.hiddenSize,
    vocabSize: config.vocabSize,
    context: config.maxPositionEmbeddings,
    heads: config.numHeads,
    mla: {
      qLoraRank: config.qLoraRank,
      kvLoraRank: config.kvLoraRank,
      qkNopeHeadDim: config.qkNopeHeadDim,
      qkRopeHeadDim: config.qkRopeHeadDim,
      vHeadDim: config.vHeadDim,
      softmaxScale: config.softmaxScale,
    },
    rope: {
      type: config.rope.type,
      theta: ropeDict.rope_theta ?? raw.rope_theta ?? 10000,
      factor: ropeDict.factor ?? null,
      original: raw.original_max_position_embeddings ?? ropeDict.original_max_position_embeddings ?? null,
      attentionFactor: config.rope.attentionFactor,
    },
    indexer: config.indexer,
    experts: moeLayers > 0
      ? {
          routed: config.nRoutedExperts,
          perToken: config.numExpertsPerTok,
          shared: config.nSharedExperts,
          intermediateSize: config.moeIntermediateSize,
          groups: config.nGroup,
          topkGroups: config.topkGroup,
          scoring: config.scoringFunc,
          method: config.topkMethod,
          normTopkProb: config.normTopkProb,
          routedScalingFactor: config.routedScalingFactor,
          layout: weights.expertLayout,
        }
      : null,
    denseIntermediateSize: config.intermediateSize,
    tieWordEmbeddings: config.tieWordEmbeddings,
    quantization: config.quantization,
    dtypes: weights.dtypeStats,
    parameters: { total: weights.totalParams, active: weights.totalParams - inactive },
    weightBytes: weights.totalBytes,
    files: weights.files.map((f) => path.basename(f)),
    extras: { count: weights.extras.length, groups: Object.fromEntries(extrasByPrefix) },
    tokenizer: tokenizer
      ? {
          vocabSize: tokenizer.vocabSize,
          bos: tokenizer.bosId,
          eos: tokenizer.eosId,
          fim: tokenizer.fim ? [tokenizer.fim.prefix.text, tokenizer.fim.suffix.text, tokenizer.fim.middle.text] : null,
          specialTokens: tokenizer.specialTokens.size,
        }
      : null,
    backends,
  };
}

function humanInfo(d: Record<string, unknown>, config: ModelConfig, weights: CheckpointWeights): string {
  const lines: [string, string][] = [];
  const add = (k: string, v: string): void => {
    lines.push([k, v]);
  };
  const arch = Array.isArray(d.architectures) ? ` (${(d.architectures as string[]).join(', ')})` : '';
  add('model', `${String(d.dir)}`);
  add('type', `${config.modelType}${arch}`);
  add('layers', `${config.numLayers} (${String(d.denseLayers)} dense MLP, ${String(d.moeLayers)} MoE)`);
  add('hidden', `${config.hiddenSize}; vocab ${config.vocabSize}; context ${config.maxPositionEmbeddings} tokens`);
  add(
    'attention',
    `MLA, ${config.numHeads} heads; q_lora_rank ${config.qLoraRank ?? 'none (q_proj)'}, kv_lora_rank ${config.kvLoraRank}, ` +
      `qk ${config.qkNopeHeadDim} nope + ${config.qkRopeHeadDim} rope, v ${config.vHeadDim}; softmax scale ${config.softmaxScale.toPrecision(6)}`,
  );
  const rope = d.rope as { theta: unknown };
  const rs = config.rope;
  const rp = d.rope as { factor?: unknown; original?: unknown };
  add(
    'rope',
    `${rs.type}, theta ${String(rope.theta)}` +
      (rs.type === 'yarn' ? `, factor ${String(rp.factor)} over ${String(rp.original)} positions, attention factor ${rs.attentionFactor.toPrecision(6)}` : ''),
  );
  add('indexer', config.indexer ? `${config.indexer.nHeads} heads × ${config.indexer.headDim}, top-k ${config.indexer.topk} (DSA)` : 'none (dense attention)');
  if (d.experts) {
    add(
      'experts',
      `${config.nRoutedExperts} routed (${config.numExpertsPerTok} per token; ${config.scoringFunc}, ${config.topkMethod}` +
        `${config.topkMethod !== 'greedy' ? `, ${config.topkGroup} of ${config.nGroup} groups` : ''}` +
        `${config.normTopkProb ? ', renormalised' : ''}, scale ${config.routedScalingFactor}) + ${config.nSharedExperts} shared; ` +
        `intermediate ${config.moeIntermediateSize}; ${weights.expertLayout ?? ''} layout`,
    );
  }
  if ((d.denseLayers as number) > 0) add('dense MLP', `intermediate ${config.intermediateSize}`);
  const dt = Object.entries(weights.dtypeStats)
    .sort((a, b) => b[1].bytes - a[1].bytes)
    .map(([k, s]) => `${k} ${s.tensors} tensors ${fmtBytes(s.bytes)}`)
    .join(', ');
  add('dtypes', dt + (config.quantization ? ' (FP8 128×128 blocks)' : ''));
  const params = d.parameters as { total: number; active: number };
  add('parameters', `${fmtCount(params.total)} total, ${fmtCount(params.active)} active per token (${params.total} / ${params.active})`);
  add('weights', `${fmtBytes(weights.totalBytes)} in ${weights.files.length} file(s)`);
  const ex = d.extras as { count: number; groups: Record<string, number> };
  if (ex.count > 0) {
    const g = Object.entries(ex.groups).slice(0, 4).map(([k, n]) => `${k} (${n})`).join(', ');
    add('unused', `${ex.count} tensor(s) not used by the config: ${g}${Object.keys(ex.groups).length > 4 ? ', …' : ''}`);
  }
  const tk = d.tokenizer as { vocabSize: number; bos: number | null; eos: number | null; fim: string[] | null } | null;
  add('tokenizer', tk ? `${tk.vocabSize} tokens, bos ${tk.bos ?? 'none'}, eos ${tk.eos ?? 'none'}, FIM ${tk.fim ? tk.fim.join(' ') : 'none'}` : 'none (no tokenizer.json: use --ids)');
  const b = d.backends as BackendInfo | { error: string };
  if ('error' in b) add('backends', `none: ${b.error}`);
  else add('backends', `cpu ${b.cpu.threads} threads (${cpuKernels(b.cpu)}); cuda ${b.cuda.built ? `built, ${b.cuda.devices} device(s)` : 'not built'}${b.cuda.error ? ` (${b.cuda.error})` : ''}`);
  const w = Math.max(...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n';
}

async function runInfo(c: InfoCommand, io: CliIo, deps: CliDeps): Promise<number> {
  const dir = resolveModelDir(c.model);
  const config = readConfig(dir);
  const weights = inspectWeights(dir, config);
  const tokenizer = loadTokenizer(dir);
  let backends: BackendInfo | { error: string };
  try {
    backends = (deps.loadNative ?? loadNativeAddon)().backends();
  } catch (e) {
    backends = { error: (e as Error).message };
  }
  const d = describeModel(dir, config, weights, tokenizer, backends);
  await io.out(c.json ? JSON.stringify(d, null, 2) + '\n' : humanInfo(d, config, weights));
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: string[], io: CliIo = processIo(), deps: CliDeps = {}): Promise<number> {
  if (argv[0] === 'serve') return runServe(argv.slice(1), io);
  let parsed: Parsed;
  try {
    parsed = parseCommandLine(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`glance: ${e.message}\n\n${e.command ? COMMAND_HELP[e.command] : USAGE}`);
      return 2;
    }
    throw e;
  }
  if (parsed.kind === 'help') {
    await io.out(parsed.text);
    return 0;
  }
  const cmd = parsed.command;
  try {
    switch (cmd.command) {
      case 'logits':
        return await runLogits(cmd, io, deps);
      case 'generate':
        return await runGenerate(cmd, io, deps);
      case 'info':
        return await runInfo(cmd, io, deps);
    }
  } catch (e) {
    if (isGlanceError(e)) {
      io.err(`glance: ${e.message}\n`);
      if (cmd.verbose && e.cause instanceof Error && e.cause.stack) io.err(`${e.cause.stack}\n`);
      return 1;
    }
    const err = e as Error;
    io.err(`glance: internal error: ${err && err.stack ? err.stack : String(e)}\n`);
    return 1;
  }
}
