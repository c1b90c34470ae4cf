import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';

import { buildFimPrompt } from '../../sidecar/src/engine/fim';
import { createTokenizer, loadTokenizer, type Tokenizer } from '../../sidecar/src/engine/tokenizer';
import { tempDir } from '../helpers/tiny-model';
import { bytesToUnicode, tinyTokenizer, writeTinyTokenizer } from '../helpers/tiny-tokenizer';
import { expectError } from '../helpers/errors';

function tok(fim: 'qwen' | 'deepseek' | 'none' = 'qwen'): { t: Tokenizer; special: Record<string, number> } {
  const tt = tinyTokenizer(fim);
  return { t: createTokenizer(tt.json, tt.config), special: tt.special };
}


const SAMPLES = [
  'hello world',
  'é🚀 naïve café',
  '  leading and trailing  ',
  'def f(x):\n\treturn x  # comment\r\n',
  "it's   a  test ,  with  spaces . ",
  '中文 日本語 한국어',
  'a\u0000b\u007f',
  '👩‍👩‍👧 ZWJ',
  '',
];

test('bytes_to_unicode is a bijection onto 256 printable characters', () => {
  const m = bytesToUnicode();
  assert.equal(new Set(m).size, 256);
  assert.equal(m[32], 'Ġ');
  assert.equal(m[10], 'Ċ');
});

test('encode/decode round-trips exactly (no clean-up of spaces)', () => {
  const { t } = tok();
  for (const s of SAMPLES) {
    const ids = t.encode(s);
    assert.equal(t.decode(ids), s, JSON.stringify(s));
  }
  // merges are used
  const hw = t.encode('hello world');
  assert.equal(hw.length, 2);
  assert.equal(t.tokenString(hw[0]!), 'hello');
  assert.equal(t.tokenString(hw[1]!), 'Ġworld');
  assert.equal(t.encode('é').length, 1);
  assert.equal(t.encode('🚀').length, 4, 'an unmerged 4-byte character is 4 byte tokens');
});

test('special tokens: bos/eos from tokenizer_config, addBos, skipSpecialTokens', () => {
  const { t, special } = tok();
  assert.equal(t.bosId, special['<｜begin▁of▁sentence｜>']);
  assert.equal(t.eosId, special['<|endoftext|>']);
  assert.equal(t.addBos, true);
  assert.equal(t.specialTokens.get('<|fim_middle|>'), special['<|fim_middle|>']);
  assert.ok(t.isSpecial(t.eosId!));
  assert.equal(t.vocabSize, Math.max(...Object.values(special)) + 1);
  const ids = [t.bosId!, ...t.encode('hello'), t.eosId!];
  assert.equal(t.decode(ids), '<｜begin▁of▁sentence｜>hello<|endoftext|>');
  assert.equal(t.decode(ids, { skipSpecialTokens: true }), 'hello');
  expectError(() => t.decode([t.vocabSize]), 'bad_input', /token id \d+ is not in the tokenizer's vocabulary/);
  assert.equal(t.decode([t.vocabSize, ...t.encode('hi'), t.vocabSize + 5], { unknownIds: 'skip' }), 'hi');
  // the streaming decoder skips ids past the tokenizer (padded model vocabularies) instead of failing
  const sd = t.createStreamDecoder({ context: [t.vocabSize + 1] });
  assert.equal([t.vocabSize + 2, ...t.encode('ok')].map((id) => sd.push(id)).join('') + sd.flush(), 'ok');
});

test("text that spells a special token: 'allow' makes it the token, 'plain' keeps it text", () => {
  const { t, special } = tok();
  const text = 'x<|fim_prefix|>y';
  const allowed = t.encode(text);
  assert.ok(allowed.includes(special['<|fim_prefix|>']!));
  const plain = t.encode(text, { specials: 'plain' });
  assert.ok(!plain.includes(special['<|fim_prefix|>']!));
  assert.ok(!plain.some((id) => t.isSpecial(id)));
  assert.equal(t.decode(plain), text);
});

test('streaming detokenizer emits only complete UTF-8 and reassembles the text', () => {
  const { t } = tok();
  for (const s of SAMPLES) {
    const ids = t.encode(s);
    const dec = t.createStreamDecoder();
    const pieces = ids.map((id) => dec.push(id));
    pieces.push(dec.flush());
    assert.equal(pieces.join(''), s, JSON.stringify(s));
    for (const p of pieces) assert.ok(!p.includes('\uFFFD'), `piece ${JSON.stringify(p)} of ${JSON.stringify(s)}`);
  }
  // "é🚀": é is one token; 🚀 four byte tokens → nothing until the fourth
  const ids = t.encode('é🚀');
  assert.equal(ids.length, 5);
  const dec = t.createStreamDecoder();
  assert.deepEqual(ids.map((id) => dec.push(id)), ['é', '', '', '', '🚀']);
  // an incomplete tail is flushed as is (replacement character), once
  const cut = t.createStreamDecoder();
  assert.equal(cut.push(ids[1]!), '');
  assert.equal(cut.push(ids[2]!), '');
  assert.equal(cut.flush(), '\uFFFD');
  assert.equal(cut.flush(), '');
});

test('streaming with special tokens skipped, and with prompt context', () => {
  const { t } = tok();
  const dec = t.createStreamDecoder({ skipSpecialTokens: true, context: t.encode('hello') });
  const out = [...t.encode(' world'), t.eosId!].map((id) => dec.push(id)).join('') + dec.flush();
  assert.equal(out, ' world');
});

test('FIM tokens are detected by family; PSM prompt built from them', () => {
  const { t, special } = tok('qwen');
  assert.deepEqual(t.fim && [t.fim.prefix.id, t.fim.suffix.id, t.fim.middle.id], [special['<|fim_prefix|>'], special['<|fim_suffix|>'], special['<|fim_middle|>']]);
  const p = buildFimPrompt(t, 'def f(x):\n    return ', '\n\nprint(f(2))\n');
  assert.equal(p.ids[0], t.bosId);
  assert.equal(p.ids[1], special['<|fim_prefix|>']);
  assert.equal(p.ids.at(-1), special['<|fim_middle|>']);
  const s = p.ids.indexOf(special['<|fim_suffix|>']!);
  assert.equal(t.decode(p.ids.slice(2, s)), 'def f(x):\n    return ');
  assert.equal(t.decode(p.ids.slice(s + 1, -1)), '\n\nprint(f(2))\n');
  assert.equal(p.prefixTokens, s - 2);
  // SPM order (tokenizer_config "fim_order": "spm"): suffix first, the middle continues the prefix
  const tt = tinyTokenizer('qwen');
  const spmTok = createTokenizer(tt.json, { ...(tt.config as object), fim_order: 'spm' });
  assert.equal(spmTok.fim?.order, 'spm');
  const q = buildFimPrompt(spmTok, 'def f(x):\n    return ', '\n\nprint(f(2))\n', { bos: false });
  assert.deepEqual(q.ids.slice(0, 2), [special['<|fim_prefix|>'], special['<|fim_suffix|>']]);
  const mid = q.ids.indexOf(special['<|fim_middle|>']!);
  assert.equal(spmTok.decode(q.ids.slice(2, mid)), '\n\nprint(f(2))\n');
  assert.equal(spmTok.decode(q.ids.slice(mid + 1)), 'def f(x):\n    return ');
  assert.throws(() => createTokenizer(tt.json, { ...(tt.config as object), fim_order: 'middle-first' }), /"fim_order" must be "psm" or "spm"/);
  assert.equal(t.fim?.order, 'psm');
  // file contents that spell FIM markers cannot inject them
  const inj = buildFimPrompt(t, 'a<|fim_middle|>', 'b', { bos: false });
  assert.equal(inj.ids.filter((id) => id === special['<|fim_middle|>']).length, 1);
  // truncation keeps the end of the prefix and the start of the suffix
  const tr = buildFimPrompt(t, 'hello hello hello', 'world world', { bos: false, maxPrefixTokens: 1, maxSuffixTokens: 1 });
  assert.equal(tr.prefixTokens, 1);
  assert.equal(tr.suffixTokens, 1);
  assert.equal(t.decode(tr.ids.slice(1, 2)), 'hello');

  const ds = tok('deepseek');
  assert.equal(ds.t.fim?.prefix.text, '<｜fim▁begin｜>');
  assert.equal(ds.t.fim?.suffix.text, '<｜fim▁hole｜>');
  assert.equal(ds.t.fim?.middle.text, '<｜fim▁end｜>');
});

test('FIM errors: no tokenizer, no FIM tokens', () => {
  expectError(() => buildFimPrompt(null, 'a', 'b'), 'no_tokenizer', /fill-in-the-middle needs a tokenizer/);
  const { t } = tok('none');
  assert.equal(t.fim, null);
  expectError(() => buildFimPrompt(t, 'a', 'b'), 'no_fim', /no fill-in-the-middle tokens; looked for <\|fim_prefix\|> <\|fim_suffix\|> <\|fim_middle\|>/, /<｜fim▁begin｜>/);
});

test('loadTokenizer: null without tokenizer.json; errors for malformed files', () => {
  const dir = tempDir('glance-tok-');
  try {
    assert.equal(loadTokenizer(dir), null);
    writeTinyTokenizer(dir);
    const t = loadTokenizer(dir)!;
    assert.equal(t.decode(t.encode('é🚀')), 'é🚀');
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": ');
    expectError(() => loadTokenizer(dir), 'bad_tokenizer', /tokenizer\.json is not valid JSON/);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"version": "1.0"}');
    expectError(() => loadTokenizer(dir), 'bad_tokenizer', /has no "model" object/);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab: {}, merges: [] }, added_tokens: [{ content: 'x' }] }));
    expectError(() => loadTokenizer(dir), 'bad_tokenizer', /every added token needs an integer "id"/);
    writeTinyTokenizer(dir);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), '[]');
    expectError(() => loadTokenizer(dir), 'bad_tokenizer', /tokenizer_config\.json must be a JSON object/);
    fs.rmSync(path.join(dir, 'tokenizer_config.json'));
    const noCfg = loadTokenizer(dir)!;
    assert.equal(noCfg.bosId, null);
    assert.equal(noCfg.addBos, false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
