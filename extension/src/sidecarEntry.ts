// Entry of the bundled sidecar (dist/sidecar.js in the .vsix): the same `glance` command line as bin/glance.js.
import { main } from '../../sidecar/src/cli/main';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`glance: ${err instanceof Error && err.stack ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  },
);
