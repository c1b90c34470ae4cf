// Turns a failed sidecar's last stderr lines into advice a user can act on.

export interface ClassifiedError {
  /** short name of the failure, for logs and tests */
  kind: 'out-of-memory' | 'no-gpu' | 'corrupt-model' | 'missing-model' | 'port-in-use' | 'native-addon' | 'unknown';
  /** one sentence: what happened and what to do */
  advice: string;
}

const RULES: { kind: ClassifiedError['kind']; pattern: RegExp; advice: string }[] = [
  {
    kind: 'out-of-memory',
    pattern: /out of memory|cudaErrorMemoryAllocation|CUDA_ERROR_OUT_OF_MEMORY|JavaScript heap out of memory|ENOMEM|cannot allocate memory/i,
    advice: 'The model did not fit in memory. Pick a smaller model (glance.model.path), lower glance.gpuMemoryGiB, or set glance.device to "cpu".',
  },
  {
    kind: 'no-gpu',
    pattern: /no CUDA(-capable)? device|CUDA driver version is insufficient|cudaErrorNoDevice|no usable GPU|nvidia-smi.*not found|cuda.*(unavailable|not available)/i,
    advice: 'No usable NVIDIA GPU was found. Set glance.device to "cpu" or "auto", or check the driver with nvidia-smi.',
  },
  {
    kind: 'port-in-use',
    pattern: /EADDRINUSE|address already in use/i,
    advice: 'The port is taken by another program. Let the sidecar pick one (no fixed port), or stop the other program.',
  },
  {
    kind: 'native-addon',
    pattern: /native addon|glance_native\.node|NODE_MODULE_VERSION|invalid ELF header/i,
    advice: 'The native addon failed to load. Reinstall the extension (or run npm install in a source checkout).',
  },
  {
    kind: 'missing-model',
    pattern: /model directory .* does not exist|no config\.json|ENOENT.*(config\.json|safetensors)|is not a directory/i,
    advice: 'The model directory is missing or incomplete. Check glance.model.path (empty uses the embedded model).',
  },
  {
    kind: 'corrupt-model',
    pattern: /safetensors|header.*(too large|invalid|corrupt)|unexpected end of|truncated|checksum|tokenizer\.json.*(invalid|parse)|Unexpected token .* JSON/i,
    advice: 'A model file looks corrupt or truncated. Download the model again, or clear glance.model.path to use the embedded one.',
  },
];

export function classifySidecarError(stderrTail: readonly string[], exitCode: number | null, signal: string | null): ClassifiedError {
  const text = stderrTail.join('\n');
  for (const rule of RULES) if (rule.pattern.test(text)) return { kind: rule.kind, advice: rule.advice };
  if (signal === 'SIGKILL' && text.trim() === '') {
    return { kind: 'out-of-memory', advice: 'The sidecar was killed (SIGKILL), often by the out-of-memory killer. Try a smaller model or glance.device "cpu".' };
  }
  const how = signal !== null ? `signal ${signal}` : `exit code ${String(exitCode)}`;
  return { kind: 'unknown', advice: `The sidecar stopped (${how}). See the log (Glance: Show Logs) for details.` };
}
