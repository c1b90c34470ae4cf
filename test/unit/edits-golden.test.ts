// Golden cases for the search/replace edit parser and applier (test/fixtures/edits/<case>/, see its README).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import { applyEditBlocks, parseEditBlocks } from '../../sidecar/src/edits';
import type { EditBlock } from '../../sidecar/src/edits';
import { fixturesDir } from '../helpers/golden';

interface ExpectedCase {
  problems: { index: number; message: string }[];
  blocks: { index: number; path: string; match: string; message?: string }[];
}

const root = path.join(fixturesDir(), 'edits');
const cases = fs
  .readdirSync(root, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

function readTree(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  if (!fs.existsSync(dir)) return files;
  const walk = (sub: string): void => {
    for (const entry of fs.readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const rel = sub === '' ? entry.name : `${sub}/${entry.name}`;
      if (entry.isDirectory()) walk(rel);
      else files.set(rel, fs.readFileSync(path.join(dir, rel), 'utf8'));
    }
  };
  walk('');
  return files;
}

test('edit fixtures are present', () => {
  assert.ok(cases.length >= 10, `expected ≥ 10 edit fixtures under ${root}, found ${cases.length}`);
});

for (const name of cases) {
  test(`edit fixture ${name}`, () => {
    const dir = path.join(root, name);
    const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as ExpectedCase;
    const before = readTree(path.join(dir, 'before'));
    const after = readTree(path.join(dir, 'after'));
    const parsed = parseEditBlocks(fs.readFileSync(path.join(dir, 'answer.md'), 'utf8'));

    assert.deepEqual(
      parsed.problems.map((p) => p.index),
      expected.problems.map((p) => p.index),
      `problem indices: ${JSON.stringify(parsed.problems)}`,
    );
    for (const [k, want] of expected.problems.entries()) {
      assert.ok(parsed.problems[k]?.message.includes(want.message), `problem ${k}: ${parsed.problems[k]?.message}`);
    }
    assert.deepEqual(
      parsed.blocks.map((b) => [b.index, b.path]),
      expected.blocks.map((b) => [b.index, b.path]),
    );

    const byPath = new Map<string, EditBlock[]>();
    for (const block of parsed.blocks) {
      const list = byPath.get(block.path ?? '') ?? [];
      list.push(block);
      byPath.set(block.path ?? '', list);
    }
    const results = new Map<string, string>();
    for (const [file, blocks] of byPath) {
      const applied = applyEditBlocks(before.get(file) ?? '', blocks);
      results.set(file, applied.text);
      for (const report of applied.reports) {
        const want = expected.blocks.find((b) => b.index === report.index);
        assert.ok(want, `unexpected report ${JSON.stringify(report)}`);
        assert.equal(report.match, want.match, `block ${report.index}: ${report.message ?? ''}`);
        if (want.message !== undefined) {
          assert.ok(report.message?.includes(want.message), `block ${report.index} message: ${report.message}`);
        }
      }
    }
    for (const file of new Set([...before.keys(), ...after.keys()])) {
      const want = after.get(file) ?? before.get(file);
      assert.equal(results.get(file) ?? before.get(file), want, `${name}: ${file}`);
    }
  });
}
