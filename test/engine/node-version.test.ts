// Run from the sources on an older Node.js: one clear line saying which version meshvm needs, not a SyntaxError.
import test from 'ava';
import { execa } from 'execa';
import fs from 'node:fs';
import { BIN, PROJECT } from '../helpers/scratch.ts';

/** The machine's own Node.js (Debian's), older than the one meshvm needs; the test is skipped where there is none. */
const SYSTEM_NODE = '/usr/bin/node';
const version = fs.existsSync(SYSTEM_NODE) ? (await execa(SYSTEM_NODE, ['--version'], { reject: false })).stdout.trim() : '';
const older = /^v(\d+)\./.exec(version) && Number(/^v(\d+)\./.exec(version)![1]) < 24;

(older ? test : test.skip)(
  `the CLI run by an older Node.js says it needs Node.js >= 24${older ? '' : ` (skipped: ${SYSTEM_NODE} is ${version || 'missing'}, not older than 24)`}`,
  async (t) => {
    for (const args of [['--version'], ['converge', 'runlists/demo.yaml', '--root', '/nonexistent']]) {
      const result = await execa(SYSTEM_NODE, [BIN, ...args], { reject: false, cwd: PROJECT });
      t.is(result.exitCode, 1);
      t.is(result.stdout, '');
      t.is(result.stderr, `meshvm needs Node.js >= 24 (found ${version}); the built executable (npm run build: dist/meshvm) brings its own`);
    }
  },
);
