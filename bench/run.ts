// npm run bench: wall time and peak memory of meshvm's hot paths (empty runlist; 1,000 files: first converge, no-op, plan),
// for the executable (dist/meshvm: what the .deb and .rpm install), the bundle (node dist/meshvm.mjs: what npm installs)
// and the sources (bin/meshvm.js).
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { $ } from 'zx';

// the meshvm processes timed here keep V8's compile cache in the checkout, as the tests do (test/helpers/setup.ts),
// not in this machine's /var/cache/meshvm, where a root meshvm keeps it by default
process.env.MESHVM_COMPILE_CACHE ??= new URL('../node_modules/.cache/meshvm-compile-cache', import.meta.url).pathname;

const project = path.resolve(import.meta.dirname, '..');
const runs = Number(process.env.BENCH_RUNS ?? 7);
$.verbose = false;
$.quiet = true;

await $({ cwd: project })`npm run -s build`;
// the executable's pages out of the page cache (GNU dd's nocache), as after a reboot: pages of a file just written are
// cached in large folios, and mapping them counted up to 17 MiB more peak RSS (bench/peers/README.md)
await $`dd if=${path.join(project, 'dist/meshvm')} iflag=nocache count=0 status=none`;
const work = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-bench-'));
const rssFile = path.join(work, 'rss');

interface Sample {
  seconds: number;
  rssMiB: number;
}

/** How an entry is run: an executable by itself (its peak RSS from GNU time), a script by this Node (from bench/rss.mjs). */
function command(entry: string, args: string[]): string[] {
  if (!/\.[cm]?[jt]s$/.test(entry)) return ['/usr/bin/time', '-f', '%M', '-o', rssFile, entry, ...args];
  return [process.execPath, '--import', path.join(project, 'bench/rss.mjs'), entry, ...args];
}

async function once(entry: string, args: string[]): Promise<Sample> {
  const started = performance.now();
  const result = await $({ env: { ...process.env, MESHVM_BENCH_RSS: rssFile, NO_COLOR: '1' }, nothrow: true })`${command(entry, args)}`;
  const seconds = (performance.now() - started) / 1000;
  if (result.exitCode !== 0 && !(args[0] === 'plan' && result.exitCode === 2)) throw new Error(`${args.join(' ')} failed: ${result.stderr}`);
  return { seconds, rssMiB: Number((await fs.readFile(rssFile, 'utf8')).trim()) / 1024 };
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0]!, median: s[Math.floor(s.length / 2)]!, max: s.at(-1)! };
};

const rows: string[] = [];
function report(name: string, samples: Sample[], target?: string) {
  const t = stats(samples.map((s) => s.seconds));
  const m = stats(samples.map((s) => s.rssMiB));
  const row = `| ${name} | ${t.min.toFixed(3)} | ${t.median.toFixed(3)} | ${t.max.toFixed(3)} | ${m.max.toFixed(0)} | ${target ?? ''} |`;
  rows.push(row);
  console.log(row);
}

const emptyRunlist = path.join(work, 'empty.yaml');
await fs.writeFile(emptyRunlist, 'name: empty\nrecipes: []\n');
const filesRunlist = path.join(work, 'files.yaml');
await fs.writeFile(filesRunlist, `name: files\nrecipes:\n  - recipe: ${path.join(project, 'bench/many-files.ts')}\n    attributes: { count: 1000 }\n`);
// the same 1,000 files written out literally in the runlist's YAML (parsing it is a cost of its own)
const literalRunlist = path.join(work, 'literal.yaml');
const files = Array.from(
  { length: 1000 },
  (_, i) => `        - { path: /srv/files/f${String(i).padStart(4, '0')}.conf, content: "key=${i}\\nvalue=${'x'.repeat(40)}\\n", mode: 0o644 }`,
);
await fs.writeFile(
  literalRunlist,
  `name: files\nrecipes:\n  - recipe: files\n    attributes:\n      directories: [{ path: /srv/files }]\n      files:\n${files.join('\n')}\n`,
);

console.log(`meshvm benchmark: ${runs} runs each, Node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'})\n`);
console.log('| case | min s | median s | max s | peak RSS MiB | target |');
console.log('|---|---|---|---|---|---|');
for (const [label, entry] of [
  ['executable', path.join(project, 'dist/meshvm')],
  ['bundle', path.join(project, 'dist/meshvm.mjs')],
  ['sources', path.join(project, 'bin/meshvm.js')],
] as const) {
  const root = await fs.mkdtemp(path.join(work, 'root-'));
  const samples = { empty: [] as Sample[], first: [] as Sample[], noop: [] as Sample[], plan: [] as Sample[], literal: [] as Sample[] };
  await once(entry, ['converge', emptyRunlist, '--root', root]); // warm the compile cache
  for (let i = 0; i < runs; i++) samples.empty.push(await once(entry, ['converge', emptyRunlist, '--root', root]));
  for (let i = 0; i < runs; i++) {
    await fs.rm(path.join(root, 'srv'), { recursive: true, force: true });
    samples.first.push(await once(entry, ['converge', filesRunlist, '--root', root]));
  }
  for (let i = 0; i < runs; i++) samples.noop.push(await once(entry, ['converge', filesRunlist, '--root', root]));
  for (let i = 0; i < runs; i++) samples.plan.push(await once(entry, ['plan', filesRunlist, '--root', root]));
  for (let i = 0; i < runs; i++) samples.literal.push(await once(entry, ['converge', literalRunlist, '--root', root]));
  report(`${label}: empty runlist`, samples.empty, label === 'sources' ? undefined : '≤ 0.07 s');
  report(`${label}: 1,000 files, first converge`, samples.first);
  report(`${label}: 1,000 files, no-op converge`, samples.noop, label === 'sources' ? undefined : '≤ 0.5 s');
  report(`${label}: 1,000 files, plan`, samples.plan);
  report(`${label}: 1,000 files written out in the YAML, no-op`, samples.literal);
}
console.log('\nPeak memory target: ≤ 120 MiB (≤ 64 MiB for the empty run and W1, bench/peers).');
await fs.rm(work, { recursive: true, force: true });
