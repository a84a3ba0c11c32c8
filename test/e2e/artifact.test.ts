// The self-contained artifact: its size, start-up and no-op converge times (on a scratch root, the demo runlist), and
// that it runs on a Debian 12 guest that has no Node.js at all.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { bootContainer, type Guest } from '../helpers/guest/container.ts';
import { ensureRootfs } from '../helpers/guest/rootfs.ts';
import { BUNDLE, DIST, e2eGate, ensureArtifact, EXECUTABLE, IMAGE, PROJECT, run } from './lab.ts';

const ok = await e2eGate(test, 'the artifact');
const serial = ok ? test.serial : test.serial.skip;
const RUNS = 7;
let dir = '';
let exe = '';

if (ok) {
  test.before('the artifact', async (t) => {
    t.timeout(15 * 60_000, 'building the artifact the first time');
    await ensureArtifact((line) => t.log(line));
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-artifact-'));
    exe = path.join(dir, 'meshvm');
    await fs.copyFile(EXECUTABLE, exe);
    await fs.chmod(exe, 0o755);
  });
  test.after.always(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });
}

async function timed(argv: string[], runs = RUNS): Promise<{ median: number; min: number; max: number }> {
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    const r = await execa(argv[0]!, argv.slice(1), { reject: false, stdin: 'ignore', env: { NO_COLOR: '1' } });
    ms.push(performance.now() - started);
    if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} exited ${r.exitCode}: ${String(r.stderr)}`);
  }
  ms.sort((a, b) => a - b);
  return { median: Math.round(ms[Math.floor(runs / 2)]!), min: Math.round(ms[0]!), max: Math.round(ms.at(-1)!) };
}

async function treeBytes(p: string): Promise<number> {
  const st = await fs.stat(p);
  if (!st.isDirectory()) return st.size;
  let sum = 0;
  for (const name of await fs.readdir(p)) if (name !== 'sea') sum += await treeBytes(path.join(p, name));
  return sum;
}

serial('size, start-up and no-op converge time of dist/meshvm (and of the bundle)', async (t) => {
  const exeBytes = (await fs.stat(exe)).size;
  const bundleBytes = (await treeBytes(DIST)) - exeBytes;
  const nodeBytes = (await fs.stat(process.execPath)).size;
  t.log(
    `dist/meshvm: ${(exeBytes / 2 ** 20).toFixed(1)} MiB (Node ${process.version}, ${(nodeBytes / 2 ** 20).toFixed(1)} MiB as npm ships it, stripped, with meshvm injected); ` +
      `bundle (dist/meshvm.mjs, meshvm-core.mjs and chunks): ${(bundleBytes / 2 ** 10).toFixed(0)} KiB`,
  );
  // the build strips the node binary (scripts/build.ts), so the size says nothing: postject's fuse, set, says meshvm is in it
  t.true((await fs.readFile(exe)).includes('NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2:1'), 'the executable is Node.js with meshvm injected');

  // start-up: the first run fills the code cache, the next ones are what a timer pays
  await timed([exe, '--version'], 1);
  const version = await timed([exe, '--version']);
  const help = await timed([exe, 'runlist', 'istio-vm']);
  const bundleVersion = await timed([process.execPath, BUNDLE, '--version']);
  t.log(
    `start-up (median of ${RUNS}): dist/meshvm --version ${version.median} ms (min ${version.min}, max ${version.max}); ` +
      `dist/meshvm runlist istio-vm ${help.median} ms; node dist/meshvm.mjs --version ${bundleVersion.median} ms`,
  );

  // the demo runlist on a scratch root: first converge, then no-ops
  const root = path.join(dir, 'root');
  await fs.mkdir(root);
  const demo = path.join(PROJECT, 'runlists/demo.yaml');
  const first = await execa(exe, ['converge', demo, '--root', root, '--json'], { reject: false });
  t.is(first.exitCode, 0, String(first.stderr));
  const firstReport = JSON.parse(String(first.stdout)) as { summary: { total: number; changed: number } };
  t.true(firstReport.summary.changed > 0);
  const noop = await timed([exe, 'converge', demo, '--root', root]);
  const again = JSON.parse(String((await execa(exe, ['converge', demo, '--root', root, '--json'])).stdout)) as {
    outcome: string;
    summary: { changed: number };
  };
  t.is(again.outcome, 'unchanged');
  t.is(again.summary.changed, 0);
  const bundleNoop = await timed([process.execPath, BUNDLE, 'converge', demo, '--root', root]);
  t.log(
    `no-op converge of the demo runlist (${firstReport.summary.total} resources, median of ${RUNS}): dist/meshvm ${noop.median} ms (min ${noop.min}, max ${noop.max}); bundle ${bundleNoop.median} ms`,
  );
  t.true(noop.median < 2000, 'a no-op converge is fast');
});

serial('it runs on a Debian 12 guest that has no Node.js', async (t) => {
  t.timeout(10 * 60_000);
  await ensureRootfs({ ...IMAGE, log: (line) => t.log(line) });
  let guest: Guest | undefined;
  try {
    guest = await bootContainer({ rootfs: IMAGE, binds: [{ host: exe, guest: '/usr/local/bin/meshvm' }] });
    await guest.waitForBoot(120_000);
    t.not((await guest.exec(['sh', '-c', 'command -v node || command -v nodejs || ls /usr/lib/node_modules'])).exitCode, 0, 'no Node.js in the image');
    t.is(await run(guest, ['meshvm', '--version']), JSON.parse(await fs.readFile(path.join(PROJECT, 'package.json'), 'utf8')).version);
    t.regex(await run(guest, ['meshvm', 'runlist']), /^istio-vm$/m);
    // a recipe module of the user's, in TypeScript, importing 'meshvm': answered by the executable itself
    await guest.writeFile(
      '/srv/site/motd.ts',
      [
        "import { defineRecipe, File, z } from 'meshvm';",
        'export default defineRecipe({',
        "  name: 'motd',",
        '  attributes: z.strictObject({ text: z.string() }),',
        "  declare: ({ text }: { text: string }) => [File({ path: '/etc/motd', content: `${text}\\n`, mode: 0o644, owner: 'root' })],",
        '});',
        '',
      ].join('\n'),
    );
    await guest.writeFile('/srv/site/site.yaml', 'name: site\nrecipes:\n  - recipe: ./motd.ts\n    attributes: { text: joined to the mesh by meshvm }\n');
    const first = await guest.exec(['meshvm', 'converge', '/srv/site/site.yaml', '--json'], { timeoutMs: 60_000 });
    t.is(first.exitCode, 0, first.stderr);
    t.is(JSON.parse(first.stdout).outcome, 'changed');
    t.is(await guest.readFile('/etc/motd'), 'joined to the mesh by meshvm\n');
    const second = await guest.exec(['meshvm', 'converge', '/srv/site/site.yaml', '--json'], { timeoutMs: 60_000 });
    t.is(JSON.parse(second.stdout).outcome, 'unchanged');
  } finally {
    await guest?.stop();
  }
});
