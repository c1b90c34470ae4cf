// Runtime validation of every request's params (zod), mirroring the types of ../protocol. A message that does not
// fit gets InvalidParams naming the field and what was expected; nothing reaches the services unvalidated.

import { z } from 'zod';

const MAX_TEXT = 8 * 1024 * 1024;
const MAX_URI = 4096;

const uri = z.string().min(1).max(MAX_URI);
const position = z.object({
  line: z.number().int().min(0).max(10_000_000),
  character: z.number().int().min(0).max(10_000_000),
});
const range = z.object({ start: position, end: position });

export const workspaceFilesParams = z.object({
  files: z
    .array(z.object({ uri, hash: z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 hex digest (64 lowercase hex digits)'), text: z.string().max(MAX_TEXT).optional() }))
    .max(5000),
  removed: z.array(uri).max(100_000).optional(),
  scanComplete: z.boolean().optional(),
  scanId: z.string().max(200).optional(),
});

export const inlineCompletionParams = z.object({
  textDocument: z.object({ uri }),
  position,
  context: z
    .object({
      triggerKind: z.union([z.literal(1), z.literal(2)]),
      selectedCompletionInfo: z.object({ range, text: z.string().max(MAX_TEXT) }).optional(),
    })
    .optional(),
});

const message = z.object({ role: z.enum(['system', 'user', 'assistant']), content: z.string().max(MAX_TEXT) });

export const chatParams = z.object({
  messages: z.array(message).min(1).max(500),
  maxTokens: z.number().int().min(1).max(32_768).optional(),
  requestId: z.string().max(200).optional(),
  context: z
    .object({
      uri: uri.optional(),
      selection: z.object({ uri, range, text: z.string().max(MAX_TEXT) }).optional(),
      files: z.array(uri).max(50).optional(),
    })
    .optional(),
});

export const editParams = z.object({
  kind: z.enum(['edit', 'explain', 'types', 'docs', 'tests', 'fix']),
  instruction: z.string().max(100_000).optional(),
  target: z.object({ uri, range: range.optional() }),
  diagnostics: z
    .array(z.object({ uri, range, severity: z.enum(['error', 'warning', 'info', 'hint']), message: z.string().max(10_000) }))
    .max(500)
    .optional(),
  maxTokens: z.number().int().min(1).max(32_768).optional(),
  requestId: z.string().max(200).optional(),
});

export const statusParams = z.union([z.object({}).loose(), z.undefined(), z.null()]);

/** Parses `value` with `schema`; on failure a readable list of what is wrong, field by field. */
export function validate<T>(schema: z.ZodType<T>, value: unknown, what: string): { ok: true; value: T } | { ok: false; message: string } {
  const r = schema.safeParse(value);
  if (r.success) return { ok: true, value: r.data };
  const problems = r.error.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.join('.') : '(params)'}: ${i.message}`);
  return { ok: false, message: `invalid params for ${what}: ${problems.join('; ')}` };
}
