// Errors the engine raises for bad models and bad input. Messages are written for people: they name the file,
// tensor or field, and say what was expected and what was found. `code` is stable and meant for programs
// (the CLI, the protocol layer); `details` carries the same facts in structured form.

export type GlanceErrorCode =
  /** config.json is not valid JSON, or a field is missing, of the wrong type, or contradicts another */
  | 'bad_config'
  /** config.json names a model_type this engine does not run */
  | 'unknown_model_type'
  /** a .safetensors file or its index is malformed (header, offsets, sizes) */
  | 'bad_safetensors'
  /** a tensor has a dtype that safetensors does not define, or one we cannot use */
  | 'unknown_dtype'
  /** a file the model needs (config.json, a shard, the weights) is not there */
  | 'missing_file'
  /** a tensor the config implies is not in the checkpoint */
  | 'missing_tensor'
  /** a tensor's shape contradicts the config */
  | 'shape_mismatch'
  /** a tensor is present with a usable shape, but cannot serve its role (dtype, FP8 scale pairing, rank) */
  | 'bad_weight'
  /** tokenizer.json / tokenizer_config.json are malformed or unsupported */
  | 'bad_tokenizer'
  /** the operation needs a tokenizer and the model directory has none */
  | 'no_tokenizer'
  /** fill-in-the-middle was asked for and the tokenizer has no FIM tokens */
  | 'no_fim'
  /** caller input is invalid (token ids out of range, empty prompt, bad option values) */
  | 'bad_input'
  /** prompt plus requested tokens exceed the model's context window */
  | 'context_overflow'
  /** the native addon could not be loaded */
  | 'native_unavailable'
  /** --device cuda was asked for and no usable CUDA device (or no CUDA build of the addon) is there */
  | 'device_unavailable'
  /** a CUDA call failed while loading or running the model on the GPU */
  | 'device_error'
  /** a read or map of a file failed for a reason other than the above */
  | 'io';

export class GlanceError extends Error {
  readonly code: GlanceErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(code: GlanceErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GlanceError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

export function isGlanceError(e: unknown, code?: GlanceErrorCode): e is GlanceError {
  return e instanceof GlanceError && (code === undefined || e.code === code);
}

/** Shape as people write it: [2048, 7168]. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** A short description of a JSON value for "found …" in messages. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing (field absent)';
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? v.slice(0, 57) + '...' : v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) {
    const s = JSON.stringify(v);
    return s.length > 60 ? `an array of ${v.length}` : s;
  }
  return 'an object';
}

/** The message of any thrown value. */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
