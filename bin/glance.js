#!/usr/bin/env node
// Entry point for `npx glance …`: the CLI is compiled from sidecar/src/cli by `npm install` (prepare).
'use strict';
require('../dist/sidecar/src/cli/main.js').main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`glance: ${err && err.stack ? err.stack : err}\n`); process.exitCode = 1; },
);
