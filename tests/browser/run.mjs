// Runs one browser test file under node's test runner with TAP output (what
// meson reads), or reports the whole file skipped when this machine cannot
// run a browser test: no chromium, or npm packages not installed
// (deploy/install-deps.sh installs both unless given --no-browser).
//
//   node tests/browser/run.mjs FILE.test.mjs
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const file = process.argv[2];
if (!file) {
  console.error('usage: node run.mjs FILE.test.mjs');
  process.exit(2);
}
const chromium = process.env.CHROMIUM || '/usr/bin/chromium';
const why = !existsSync(chromium) ? `${chromium} is not installed`
  : !existsSync(path.join(here, 'node_modules', 'playwright-core')) ? 'tests/browser/node_modules is missing (npm ci)'
  : '';
if (why) {
  console.log(`1..0 # SKIP ${why}; run deploy/install-deps.sh`);
  process.exit(0);
}
// The dashboard's charting library must be there: without it the page is broken.
if (!existsSync(path.join(here, '..', '..', 'web', 'node_modules', 'uplot', 'dist', 'uPlot.iife.min.js'))) {
  console.log('Bail out! web/node_modules/uplot is missing: run deploy/install-deps.sh (npm ci in web/)');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', path.resolve(file)], { stdio: 'inherit', cwd: here });
process.exit(r.status === null ? 1 : r.status);
