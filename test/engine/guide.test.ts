// The writer's guide (docs/writing-resources.md) kept honest: its file= blocks written out as a site directory,
// type-checked against meshvm, its test block run here by ava, its runlist planned and converged by the real CLI.
import test, { type ExecutionContext } from 'ava';
import { rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire, registerHooks } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { meshvm, scratchRoot, snapshot, PROJECT } from '../helpers/scratch.ts';

const GUIDE = path.join(PROJECT, 'docs/writing-resources.md');
const guide = await fs.readFile(GUIDE, 'utf8');

/** The guide's fenced blocks marked with a name: ```ts file=resources/swap-file.ts, ```text output=plan. */
function markedBlocks(markdown: string, marker: 'file' | 'output'): Map<string, string> {
  const blocks = new Map<string, string>();
  for (const [, name, body] of markdown.matchAll(new RegExp(`^\`\`\`\\w+ ${marker}=(\\S+)\\n([\\s\\S]*?)^\`\`\`$`, 'gm'))) {
    if (blocks.has(name!)) throw new Error(`the guide has two blocks marked ${marker}=${name}`);
    blocks.set(name!, body!);
  }
  return blocks;
}

const files = markedBlocks(guide, 'file');
const outputs = markedBlocks(guide, 'output');
const RUNLIST = 'guide.yaml';
const TEST_BLOCK = 'test/resources/swap-file.test.ts';
const DB_PASSWORD = 'correct-horse-battery-staple';
const TOKENS = 'runtime_directory[/run/secrets/tokens]';
const RULE = '/etc/tmpfiles.d/meshvm-run-secrets-tokens.conf';

// The site directory: the guide's files as a user would have them, beside a package.json that makes them ES modules.
const site = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-guide-site-'));
process.once('exit', () => rmSync(site, { recursive: true, force: true }));
for (const [name, body] of files) {
  await fs.mkdir(path.dirname(path.join(site, name)), { recursive: true });
  await fs.writeFile(path.join(site, name), body);
}
await fs.writeFile(path.join(site, 'package.json'), '{ "type": "module" }\n');
// the test block imports this repository's helper as it would from test/resources/
await fs.mkdir(path.join(site, 'test/helpers'), { recursive: true });
await fs.writeFile(path.join(site, 'test/helpers/scratch.ts'), `export * from ${JSON.stringify(path.join(PROJECT, 'test/helpers/scratch.ts'))};\n`);
// type-checked with this repository's settings, 'meshvm' being its index.ts
const compilerOptions = {
  typeRoots: [path.join(PROJECT, 'node_modules/@types')],
  paths: { meshvm: [path.join(PROJECT, 'index.ts')], ava: [path.join(PROJECT, 'node_modules/ava/entrypoints/main.d.mts')] },
};
await fs.writeFile(path.join(site, 'tsconfig.json'), JSON.stringify({ extends: path.join(PROJECT, 'tsconfig.json'), compilerOptions, include: ['**/*.ts'] }));

// 'meshvm' resolves here as the CLI resolves it for the modules it loads; 'ava' from the site is this run's ava,
// so the guide's test block declares its tests in this file's run
const siteUrl = pathToFileURL(site + '/').href;
registerHooks({
  resolve(specifier, context, nextResolve) {
    if (specifier === 'meshvm') return { url: pathToFileURL(path.join(PROJECT, 'index.ts')).href, shortCircuit: true };
    if (specifier === 'ava' && context.parentURL?.startsWith(siteUrl)) return nextResolve(specifier, { ...context, parentURL: import.meta.url });
    return nextResolve(specifier, context);
  },
});

/** What the guide's kinds run (util-linux and systemd), where this machine has none. */
async function missing(tools: readonly string[]): Promise<string[]> {
  const found = async (tool: string) => (await execa('sh', ['-c', `command -v ${tool} || test -x /usr/sbin/${tool}`], { reject: false })).exitCode === 0;
  const out: string[] = [];
  for (const tool of tools) if (!(await found(tool))) out.push(tool);
  return out;
}
const missingTools = await missing(['systemd-tmpfiles', 'fallocate', 'mkswap', 'blkid']);

// From here on, no await until the last test is declared: ava takes the tests declared in one go. The guide's test
// block is loaded synchronously (require of an ES module), so its tests are declared in that same go.
if (files.has(TEST_BLOCK)) createRequire(import.meta.url)(path.join(site, TEST_BLOCK));

interface Report {
  outcome: string;
  summary: { total: number; changed: number; unchanged: number };
  resources: Resource[];
  notifications: { ref: string; status: string; because: string[] }[];
}
interface Resource {
  ref: string;
  status: string;
  changes: string[];
  fields: string[];
  actions?: string[];
  children?: Resource[];
  error?: string;
}

/** Runs meshvm in the site directory, as a user beside the runlist would; --json reports are parsed. */
async function run(t: ExecutionContext, command: 'plan' | 'converge', root: string, ...flags: string[]) {
  const result = await meshvm([command, RUNLIST, '--root', root, ...flags], { cwd: site });
  t.false(result.stdout.includes(DB_PASSWORD) || result.stderr.includes(DB_PASSWORD), `meshvm ${command} printed the secret`);
  return { ...result, report: flags.includes('--json') ? (JSON.parse(result.stdout) as Report) : undefined };
}

const byRef = (report: Report | undefined, ref: string) => report?.resources.find((r) => r.ref === ref);
const modeOf = async (file: string) => (await fs.stat(file)).mode & 0o7777;
const uidOf = async (root: string, user: string) =>
  Number(new RegExp(`^${user}:[^:]*:(\\d+):`, 'm').exec(await fs.readFile(path.join(root, 'etc/passwd'), 'utf8'))?.[1]);

function needTools(t: ExecutionContext): boolean {
  if (missingTools.length === 0) return true;
  t.fail(`the guide's kinds drive ${missingTools.join(', ')}, missing here (apt-get install util-linux systemd)`);
  return false;
}

test('the guide has the blocks it talks about, documents every hook of ResourceType, and its kinds use each one', async (t) => {
  t.deepEqual([...files.keys()].sort(), [
    'guide.yaml',
    'resources/env-file.ts',
    'resources/runtime-directory.ts',
    'resources/self-signed-cert.ts',
    'resources/swap-file.ts',
    'site.ts',
    TEST_BLOCK,
  ]);
  t.deepEqual([...outputs.keys()], ['plan']);
  // the hooks as the contract declares them today: a hook added there and not here fails this test
  const contract = await fs.readFile(path.join(PROJECT, 'engine/resource.ts'), 'utf8');
  const body = /^export interface ResourceType<Spec, State> \{\n([\s\S]*?)^\}/m.exec(contract)?.[1] ?? '';
  const hooks = [...body.matchAll(/^ {2}(\w+)\??[(:]/gm)].map((m) => m[1]!);
  t.true(hooks.length >= 14 && hooks.includes('children') && hooks.includes('refresh'), `hooks read from engine/resource.ts: ${hooks.join(', ')}`);
  const kinds = [...files]
    .filter(([name]) => name.startsWith('resources/'))
    .map(([, code]) => code)
    .join('\n');
  for (const hook of hooks) {
    t.regex(guide, new RegExp(`^\\| \`${hook}\` +\\|`, 'm'), `the guide's table has no row for ${hook}`);
    t.regex(kinds, new RegExp(`^\\s+(?:async\\s+)?${hook}\\s*[(:]`, 'm'), `no worked kind uses ${hook}`);
  }
});

test("the guide's code type-checks against meshvm", async (t) => {
  const tsc = await execa(path.join(PROJECT, 'node_modules/.bin/tsc'), ['-p', site], { reject: false, timeout: 120_000 });
  t.is(tsc.exitCode, 0, tsc.stdout + tsc.stderr);
});

test("the guide's runlist: plan writes nothing, converge changes, the action runs once, converge again and plan have nothing to do", async (t) => {
  if (!needTools(t)) return;
  const root = await scratchRoot(t, 'meshvm-guide-root-');
  const empty = await snapshot(root);

  // plan on an empty root: everything would change, and nothing is written
  const plan = await run(t, 'plan', root, '--detailed-exitcode', '--json');
  t.is(plan.exitCode, 2, plan.stderr);
  t.is(plan.report!.outcome, 'would-change');
  t.true(plan.report!.resources.every((r) => r.status === 'would-change'));
  t.deepEqual(
    plan.report!.notifications.map((n) => [n.ref, n.status]),
    [[TOKENS, 'would-refresh']],
  );
  const human = await run(t, 'plan', root);
  assertShown(t, human.stdout, outputs.get('plan') ?? '');
  t.deepEqual(await snapshot(root), empty, 'plan wrote nothing');

  // the first converge
  const first = await run(t, 'converge', root, '--json');
  t.is(first.exitCode, 0, first.stderr);
  t.is(first.report!.outcome, 'changed');
  t.is(first.report!.summary.changed, 7);

  const swap = byRef(first.report, 'swap_file[/swapfile]')!;
  t.deepEqual(swap.changes, [
    'create it (64 MiB)',
    'set mode to 0600',
    'format it as swap (`mkswap`)',
    'not going to switch it on (`swapon /swapfile`): the root is not the running system; its /etc/fstab switches it on at boot',
  ]);
  const swapStat = await fs.stat(path.join(root, 'swapfile'));
  t.is(swapStat.size, 64 * 1024 * 1024);
  t.is(swapStat.mode & 0o7777, 0o600);
  t.is((await execa('blkid', ['--probe', '--match-tag', 'TYPE', '--output', 'value', path.join(root, 'swapfile')])).stdout.trim(), 'swap');

  // the composite: its parts under nested refs, its action once, the notification owed to it not needed
  const tokens = byRef(first.report, TOKENS)!;
  t.is(tokens.status, 'changed');
  t.deepEqual(
    tokens.children!.map((c) => [c.ref, c.status]),
    [
      [`${TOKENS} > directory[/etc/tmpfiles.d]`, 'changed'],
      [`${TOKENS} > file[${RULE}]`, 'changed'],
    ],
  );
  t.deepEqual(tokens.fields, ['directory[/etc/tmpfiles.d]', `file[${RULE}]`]);
  t.deepEqual(tokens.actions, [`create /run/secrets/tokens now (\`systemd-tmpfiles --create ${RULE}\`)`]);
  t.deepEqual(first.report!.notifications, [{ ref: TOKENS, status: 'not-needed', because: ['user[istio-proxy]'] }]);
  const dir = path.join(root, 'run/secrets/tokens');
  t.is(await modeOf(dir), 0o750, 'systemd-tmpfiles made the directory the rule describes');
  t.is((await fs.stat(dir)).uid, await uidOf(root, 'istio-proxy'));

  // the secret: on disk, and nowhere in what meshvm printed or stored
  const env = byRef(first.report, 'env_file[/etc/ratings/ratings.env]')!;
  t.deepEqual(
    env.children!.map((c) => c.ref),
    ['env_file[/etc/ratings/ratings.env] > directory[/etc/ratings]', 'env_file[/etc/ratings/ratings.env] > file[/etc/ratings/ratings.env]'],
  );
  t.regex(
    env.children![1]!.changes.join('\n'),
    /^ {2}\+MYSQL_DB_HOST="127\.0\.0\.1"\n {2}\+MYSQL_DB_PASSWORD="\(sensitive\)"$/m,
    'the diff shows the values and hides the secret',
  );
  t.regex(await fs.readFile(path.join(root, 'etc/ratings/ratings.env'), 'utf8'), new RegExp(`^MYSQL_DB_PASSWORD="${DB_PASSWORD}"$`, 'm'));
  t.is(await modeOf(path.join(root, 'etc/ratings/ratings.env')), 0o640);
  t.false((await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8')).includes(DB_PASSWORD));

  // systemd-tmpfiles keeps the directory, meshvm the rule: a mode only the action would put back shows it does not run again
  await fs.chmod(dir, 0o700);
  const second = await run(t, 'converge', root, '--json');
  t.is(second.exitCode, 0, second.stderr);
  t.is(second.report!.outcome, 'unchanged');
  t.is(second.report!.summary.changed, 0);
  t.true(second.report!.resources.every((r) => r.status === 'unchanged' && r.changes.length === 0 && !r.actions && !r.children));
  t.deepEqual(second.report!.notifications, []);
  t.is(await modeOf(dir), 0o700, 'the action did not run again');

  const converged = await snapshot(root);
  const after = await run(t, 'plan', root, '--detailed-exitcode');
  t.is(after.exitCode, 0, after.stdout + after.stderr);
  t.regex(after.stdout, /plan: nothing to do: 7 resources, 0 to change, 0 failed/);
  t.deepEqual(await snapshot(root), converged, 'plan wrote nothing');
});

test('a hand-edited rule: plan says what would change and writes nothing; converge puts the rule back, then runs the action once', async (t) => {
  if (!needTools(t)) return;
  const root = await scratchRoot(t, 'meshvm-guide-root-');
  t.is((await run(t, 'converge', root)).exitCode, 0);
  const dir = path.join(root, 'run/secrets/tokens');
  await fs.chmod(dir, 0o700);
  await fs.appendFile(path.join(root, RULE), 'd /run/secrets/other 0777 root root -\n');
  const drifted = await snapshot(root);

  const plan = await run(t, 'plan', root, '--detailed-exitcode', '--json');
  t.is(plan.exitCode, 2, plan.stderr);
  t.deepEqual(
    plan.report!.resources.filter((r) => r.status !== 'unchanged').map((r) => r.ref),
    [TOKENS],
  );
  const tokens = byRef(plan.report, TOKENS)!;
  t.is(tokens.status, 'would-change');
  t.deepEqual(
    tokens.children!.map((c) => [c.ref, c.status]),
    [[`${TOKENS} > file[${RULE}]`, 'would-change']],
  );
  t.deepEqual(tokens.actions, [`create /run/secrets/tokens now (\`systemd-tmpfiles --create ${RULE}\`)`]);
  t.deepEqual(plan.report!.notifications, []);
  t.deepEqual(await snapshot(root), drifted, 'plan wrote nothing');

  const converge = await run(t, 'converge', root, '--json');
  t.is(converge.exitCode, 0, converge.stderr);
  t.deepEqual(byRef(converge.report, TOKENS)!.actions, [`create /run/secrets/tokens now (\`systemd-tmpfiles --create ${RULE}\`)`]);
  t.deepEqual(converge.report!.notifications, [], 'nothing notified it: the account did not change');
  t.is(await modeOf(dir), 0o750, 'the action ran, with the rule as meshvm wrote it');
  await t.throwsAsync(fs.stat(path.join(root, 'run/secrets/other')), { code: 'ENOENT' }, 'the rule was put back before the action ran');

  const again = await run(t, 'converge', root, '--json');
  t.is(again.report!.outcome, 'unchanged');
});

/** Each line of the guide's output block matches a line of what meshvm printed, in order; "…" stands for anything. */
function assertShown(t: ExecutionContext, printed: string, block: string) {
  const lines = printed.split('\n');
  let at = 0;
  for (const expected of block.trimEnd().split('\n')) {
    const pattern = new RegExp(
      `^${expected
        .split('…')
        .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*')}$`,
    );
    const found = lines.findIndex((line, i) => i >= at && pattern.test(line));
    if (found < 0) {
      t.fail(`the guide's output block shows a line meshvm did not print (in this order):\n  ${expected}\nmeshvm printed:\n${printed}`);
      return;
    }
    at = found + 1;
  }
  t.pass();
}
