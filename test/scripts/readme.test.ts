// README.md's fenced commands, run exactly as written: every ```sh block, as one `sh -e` script, in a checkout made of
// links to this one, with `meshvm` on PATH being bin/meshvm.js. Each runs in a mount namespace whose /tmp is a scratch
// directory of the test's, so what the commands write under /tmp (/tmp/x, /tmp/meshvm-demo) never reaches the machine's.
// A block marked `sh not-run` (the install, the suite itself, what runs on a VM) says why in its first line.
import test from 'ava';
import { execa, execaSync } from 'execa';
import fs from 'node:fs/promises';
import path from 'node:path';
import { BIN, PROJECT, scratchRoot } from '../helpers/scratch.ts';

interface Fence {
  info: string;
  body: string;
  line: number;
}

function fences(markdown: string): Fence[] {
  return [...markdown.matchAll(/^```([^\n`]*)\n([\s\S]*?)^```$/gm)].map((m) => ({
    info: m[1]!.trim(),
    body: m[2]!,
    line: markdown.slice(0, m.index).split('\n').length,
  }));
}

const readme = await fs.readFile(path.join(PROJECT, 'README.md'), 'utf8');
const blocks = fences(readme);
const runnable = blocks.filter((b) => b.info === 'sh');

test('every fenced block says what it is; each one not run says why', (t) => {
  for (const block of blocks) {
    t.true(['sh', 'sh not-run', 'yaml', 'ts', 'text'].includes(block.info), `README.md:${block.line}: info string "${block.info}"`);
    if (block.info === 'sh not-run') t.regex(block.body, /^# /, `README.md:${block.line}: a not-run block starts with a comment saying why`);
  }
  t.true(runnable.length >= 2, 'the demo and the checkout commands are run');
});

test('fences() finds blocks, their info strings and lines', (t) => {
  t.deepEqual(fences('a\n```sh\necho 1\n```\n\n```sh not-run\n# no\n```\n'), [
    { info: 'sh', body: 'echo 1\n', line: 2 },
    { info: 'sh not-run', body: '# no\n', line: 6 },
  ]);
});

const canRun =
  process.getuid?.() === 0 && !PROJECT.startsWith('/tmp/') && execaSync('sh', ['-c', 'command -v unshare && command -v npm'], { reject: false }).exitCode === 0;
const real = canRun ? test.serial : test.serial.skip;

real(
  `the README's sh blocks run as written${canRun ? '' : ' (skipped: needs root and unshare for a private /tmp, npm, and a checkout outside /tmp)'}`,
  async (t) => {
    t.timeout(5 * 60_000);
    const tmp = await scratchRoot(t, 'meshvm-readme-');
    // inside the namespace this directory is /tmp: the checkout of links, and `meshvm` on PATH
    await fs.mkdir(path.join(tmp, 'checkout'));
    for (const name of await fs.readdir(PROJECT)) {
      if (name === 'dist' || name.startsWith('.')) continue;
      await fs.symlink(path.join(PROJECT, name), path.join(tmp, 'checkout', name));
    }
    await fs.mkdir(path.join(tmp, 'bin'));
    await fs.writeFile(path.join(tmp, 'bin/meshvm'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} "$@"\n`, { mode: 0o755 });
    const env: Record<string, string | undefined> = {
      ...process.env,
      PATH: `/tmp/bin:${path.dirname(process.execPath)}:${process.env.PATH}`,
      NO_COLOR: '1',
      MESHVM_DEMO_ROOT: undefined,
    };
    for (const block of runnable) {
      const run = await execa(
        'unshare',
        ['--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount --bind "$1" /tmp && cd /tmp/checkout && exec sh -e -c "$2"', 'sh', tmp, block.body],
        { env, extendEnv: false, reject: false, all: true },
      );
      t.is(run.exitCode, 0, `README.md:${block.line}:\n${block.body}\n${run.all}`);
    }

    // what the commands made, seen from outside
    t.regex(
      await fs.readFile(path.join(tmp, 'meshvm-demo/var/lib/istio/envoy/cluster.env'), 'utf8'),
      /^ISTIO_SERVICE_CIDR=10\.63\.240\.0\/20$/m,
      'npm run demo',
    );
    const plan = JSON.parse(await fs.readFile(path.join(tmp, 'checkout/plan.json'), 'utf8')) as { mode: string; outcome: string };
    t.like(plan, { mode: 'plan', outcome: 'unchanged' }, 'npm run --silent ... --json > plan.json is the report alone');
    t.regex(await fs.readFile(path.join(tmp, 'checkout/demo.yaml'), 'utf8'), /^name: demo$/m);
    t.regex(
      await fs.readFile(path.join(tmp, 'demo-copy/etc/certs/root-cert.pem'), 'utf8'),
      /^-----BEGIN CERTIFICATE-----$/m,
      'the copied demo runlist converged',
    );
    t.is(JSON.parse(await fs.readFile(path.join(tmp, 'checkout/node.schema.json'), 'utf8')).type, 'object');
    await t.throwsAsync(fs.stat('/tmp/demo-copy'), { code: 'ENOENT' }, "nothing reached the machine's /tmp");
  },
);
