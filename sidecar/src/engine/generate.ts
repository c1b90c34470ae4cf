// Autoregressive generation: one prefill of the prompt, then one token per forward step, streaming text that is
// final (complete UTF-8, and never part of a stop sequence: stop sequences are held back until they can be ruled
// out, and never appear in the output).

import type { ModelConfig } from './types';
import { GlanceError } from './errors';
import { Sampler, type SamplerOptions } from './sampling';
import type { Tokenizer } from './tokenizer';

/** The part of the lead's Sequence (model.ts) that generation uses. */
export interface SequenceLike {
  readonly length: number;
  forward(ids: Int32Array, allLogits: boolean): Float32Array;
  truncate(length: number): void;
}

/** The part of the lead's Model (model.ts) that generation uses. */
export interface ModelLike {
  readonly config: ModelConfig;
  createSequence(maxTokens?: number): SequenceLike;
}

export type FinishReason = 'eos' | 'stop' | 'length' | 'abort';

export interface GenerateOptions extends SamplerOptions {
  /** tokens to generate at most (≥ 0) */
  maxTokens: number;
  /** stop sequences: generation ends when the text contains one; the text returned never includes it */
  stop?: readonly string[];
  /** token ids that end generation (EOS). Default: config eos_token_id(s) and the tokenizer's eos_token. */
  stopIds?: readonly number[];
  signal?: AbortSignal;
  /** continue on this sequence (its cached tokens stay); default: a new sequence */
  sequence?: SequenceLike;
  /** use this sampler instead of one built from the sampling options */
  sampler?: Sampler;
}

export interface GenerateStep {
  id: number;
  /** text that became final with this token ('' while bytes or a possible stop sequence are held back) */
  text: string;
  /** set on the last step */
  finishReason?: FinishReason;
}

export interface GenerateResult {
  ids: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  seed: number;
}

/** Holds back text that could be the start of a stop sequence. */
export class StopFilter {
  private pending = '';
  private readonly stops: string[];

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** Adds text; returns what can be released and whether a stop sequence was found (text before it is released). */
  push(text: string, final = false): { text: string; stopped: boolean } {
    this.pending += text;
    if (this.stops.length === 0) {
      const out = this.pending;
      this.pending = '';
      return { text: out, stopped: false };
    }
    let at = -1;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      const out = this.pending.slice(0, at);
      this.pending = '';
      return { text: out, stopped: true };
    }
    if (final) {
      const out = this.pending;
      this.pending = '';
      return { text: out, stopped: false };
    }
    // keep the longest suffix that is a proper prefix of some stop sequence
    let keep = 0;
    for (const s of this.stops) {
      const max = Math.min(s.length - 1, this.pending.length);
      for (let k = max; k > keep; k--) {
        if (this.pending.endsWith(s.slice(0, k))) {
          keep = k;
          break;
        }
      }
    }
    const out = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return { text: out, stopped: false };
  }
}

function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Validates prompt ids against the vocabulary; returns them as an Int32Array. */
export function checkPromptIds(ids: ArrayLike<number>, vocabSize: number): Int32Array {
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new GlanceError(
        'bad_input',
        `token id ${String(id)} at position ${i} is outside the model's vocabulary (0..${vocabSize - 1}, vocab_size ${vocabSize})`,
        { position: i, id, vocabSize },
      );
    }
    out[i] = id;
  }
  return out;
}

/**
 * Generates up to `opts.maxTokens` tokens after `promptIds`, yielding each token with the text it finalised.
 * The last sampled token is not run through the model (the sequence then holds prompt + generated − 1 tokens).
 * Returns the whole result when done.
 */
export async function* generate(
  model: ModelLike,
  tokenizer: Tokenizer | null,
  promptIds: ArrayLike<number>,
  opts: GenerateOptions,
): AsyncGenerator<GenerateStep, GenerateResult, void> {
  const cfg = model.config;
  const maxTokens = opts.maxTokens;
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 0) {
    throw new GlanceError('bad_input', `maxTokens must be a non-negative integer; found ${String(maxTokens)}`);
  }
  const prompt = checkPromptIds(promptIds, cfg.vocabSize);
  const base = opts.sequence?.length ?? 0;
  if (prompt.length === 0 && base === 0) {
    throw new GlanceError('bad_input', 'the prompt is empty: at least one token is needed to start generation');
  }
  const needed = base + prompt.length + maxTokens;
  if (needed > cfg.maxPositionEmbeddings) {
    throw new GlanceError(
      'context_overflow',
      `${base > 0 ? `cached tokens (${base}) + ` : ''}prompt (${prompt.length} tokens) + max tokens (${maxTokens}) = ${needed}, ` +
        `which exceeds the model's context of ${cfg.maxPositionEmbeddings} tokens (max_position_embeddings)`,
      { cached: base, prompt: prompt.length, maxTokens, needed, context: cfg.maxPositionEmbeddings },
    );
  }
  const stops = opts.stop ?? [];
  if (stops.length > 0 && !tokenizer) {
    throw new GlanceError('no_tokenizer', 'stop sequences need a tokenizer, and the model directory has no tokenizer.json');
  }
  const stopIds = new Set<number>(opts.stopIds ?? [...cfg.eosTokenIds, ...(tokenizer?.eosId != null ? [tokenizer.eosId] : [])]);
  const sampler = opts.sampler ?? new Sampler(opts);
  const result: GenerateResult = { ids: [], text: '', finishReason: 'length', promptTokens: prompt.length, seed: sampler.seed };
  if (maxTokens === 0) return result;
  if (opts.signal?.aborted) {
    result.finishReason = 'abort';
    return result;
  }

  const seq = opts.sequence ?? model.createSequence(needed);
  const decoder = tokenizer?.createStreamDecoder({ skipSpecialTokens: true, context: prompt }) ?? null;
  const filter = new StopFilter(stops);
  const history: number[] = Array.from(prompt);
  const vocab = cfg.vocabSize;

  let logits = seq.forward(prompt, false);
  for (let i = 0; i < maxTokens; i++) {
    if (logits.length < vocab) {
      throw new Error(`forward returned ${logits.length} logits, fewer than vocab_size ${vocab}`);
    }
    const row = logits.length === vocab ? logits : logits.subarray(logits.length - vocab);
    const id = sampler.sample(row, history);
    history.push(id);
    result.ids.push(id);
    const last = i === maxTokens - 1;
    let step: GenerateStep;
    if (stopIds.has(id)) {
      const rest = filter.push(decoder ? decoder.flush() : '', true);
      step = { id, text: rest.text, finishReason: rest.stopped ? 'stop' : 'eos' };
    } else {
      let delta = decoder ? decoder.push(id) : '';
      if (last && decoder) delta += decoder.flush();
      const out = filter.push(delta, last);
      step = { id, text: out.text };
      if (out.stopped) step.finishReason = 'stop';
      else if (last) step.finishReason = 'length';
    }
    result.text += step.text;
    if (step.finishReason) {
      result.finishReason = step.finishReason;
      yield step;
      return result;
    }
    yield step;
    await tick();
    if (opts.signal?.aborted) {
      result.finishReason = 'abort';
      return result;
    }
    logits = seq.forward(Int32Array.of(id), false);
  }
  return result;
}
