// The command line end to end on scratch roots: the demo, plan, the JSON report, exit codes, user recipe modules.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { meshvm, scratchRoot, snapshot, writeRunlist, PROJECT } from '../helpers/scratch.ts';
import { DOCS_CLUSTER_ENV, DOCS_KUBEDNS, DOCS_SIDECAR_ENV } from '../helpers/docs.ts';

const DEMO = path.join(PROJECT, 'runlists/demo.yaml');

test("the demo converges the files of Istio's mesh-expansion docs, then changes nothing", async (t) => {
  const root = await scratchRoot(t);
  const first = await meshvm(['converge', DEMO, '--root', root, '--json']);
  t.is(first.exitCode, 0, first.stderr);
  const report = JSON.parse(first.stdout);
  t.is(report.outcome, 'changed');
  t.true(report.summary.changed > 0);
  const read = (p: string) => fs.readFile(path.join(root, p), 'utf8');
  t.is(await read('etc/dnsmasq.d/kubedns'), DOCS_KUBEDNS);
  t.is(await read('var/lib/istio/envoy/cluster.env'), DOCS_CLUSTER_ENV);
  t.is(await read('var/lib/istio/envoy/sidecar.env'), DOCS_SIDECAR_ENV);
  const key = await fs.stat(path.join(root, 'etc/certs/key.pem'));
  t.is(key.mode & 0o777, 0o600);
  const [, uid] = /^istio-proxy:x:(\d+)/m.exec(await read('etc/passwd'))!;
  t.is(key.uid, Number(uid));
  t.deepEqual(JSON.parse(await read('var/lib/meshvm/last-run.json')).summary, report.summary);

  const again = await meshvm(['converge', DEMO, '--root', root, '--json']);
  const second = JSON.parse(again.stdout);
  t.is(second.outcome, 'unchanged');
  t.is(second.summary.changed, 0);
  t.true(second.resources.every((r: { status: string; changes: string[] }) => r.status === 'unchanged' && r.changes.length === 0));
});

test('plan changes nothing, byte for byte, and --detailed-exitcode says whether a converge would', async (t) => {
  const root = await scratchRoot(t);
  const before = await snapshot(root);
  const plan = await meshvm(['plan', DEMO, '--root', root, '--detailed-exitcode', '--json']);
  t.is(plan.exitCode, 2, plan.stderr);
  const report = JSON.parse(plan.stdout);
  t.true(report.resources.every((r: { status: string }) => r.status === 'would-change'));
  t.deepEqual(await snapshot(root), before);

  t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
  await fs.writeFile(path.join(root, 'var/lib/istio/envoy/sidecar.env'), 'edited by hand\n');
  const drifted = await snapshot(root);
  const plan2 = await meshvm(['plan', DEMO, '--root', root, '--detailed-exitcode']);
  t.is(plan2.exitCode, 2);
  t.regex(
    plan2.stdout,
    /file\[\/var\/lib\/istio\/envoy\/sidecar.env\] would change\n {4}update content\n {6}@@ -1 \+1 @@\n {6}-edited by hand\n {6}\+ISTIO_INBOUND_PORTS=27017,3306,8080/,
  );
  t.deepEqual(await snapshot(root), drifted);

  t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
  t.is((await meshvm(['plan', DEMO, '--root', root, '--detailed-exitcode'])).exitCode, 0);
  t.is((await meshvm(['plan', DEMO, '--root', root])).exitCode, 0);
});

test('the JSON report has the documented shape', async (t) => {
  const root = await scratchRoot(t);
  const { stdout } = await meshvm(['converge', DEMO, '--root', root, '--json']);
  const report = JSON.parse(stdout);
  t.deepEqual(Object.keys(report.summary).sort(), ['changed', 'failed', 'seconds', 'skipped', 'total', 'unchanged']);
  for (const r of report.resources) {
    t.true(['unchanged', 'changed', 'would-change', 'failed', 'skipped'].includes(r.status));
    t.is(typeof r.ref, 'string');
    t.true(Array.isArray(r.changes));
  }
  t.is(report.summary.total, report.resources.length);
});

test('attribute precedence: recipe defaults < runlist < node file < --set', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const runlist = (shared: string, own: string) =>
    writeRunlist(
      dir,
      'p.yaml',
      `name: p\n${shared}recipes:\n  - recipe: istio-proxy-user\n  - recipe: cluster-env\n    attributes:\n      serviceCidr: 10.0.0.0/16\n${own}`,
    );
  const namespace = async (args: string[]) => {
    const result = await meshvm(['converge', ...args, '--root', root]);
    t.is(result.exitCode, 0, result.stderr);
    // the line is written only when it differs from the sidecar's default, istio-system
    return /ISTIO_SYSTEM_NAMESPACE=(.*)/.exec(await fs.readFile(path.join(root, 'var/lib/istio/envoy/cluster.env'), 'utf8'))?.[1] ?? 'istio-system';
  };
  t.is(await namespace([await runlist('', '')]), 'istio-system', 'the recipe default');
  t.is(await namespace([await runlist('attributes:\n  systemNamespace: shared\n', '')]), 'shared', 'the runlist, shared');
  t.is(
    await namespace([await runlist('attributes:\n  systemNamespace: shared\n', '      systemNamespace: entry\n')]),
    'entry',
    'the runlist entry over the shared block',
  );
  const file = await runlist('attributes:\n  systemNamespace: shared\n', '      systemNamespace: entry\n');
  await fs.mkdir(path.join(root, 'etc/meshvm'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/meshvm/node.yaml'), 'attributes:\n  cluster-env:\n    systemNamespace: node\n');
  t.is(await namespace([file]), 'node', 'the node file under the root');
  const other = path.join(dir, 'other-node.yaml');
  await fs.writeFile(other, 'attributes:\n  systemNamespace: node-flag\n');
  t.is(await namespace([file, '--node', other]), 'node-flag', '--node FILE instead');
  t.is(await namespace([file, '--set', 'systemNamespace=set']), 'set', '--set over the node file');
  t.is(await namespace([file, '--set', 'cluster-env.systemNamespace=scoped']), 'scoped', '--set scoped to a recipe');
});

test('a recipe module outside the package imports meshvm and runs', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-user-recipes-');
  await fs.writeFile(
    path.join(dir, 'motd.ts'),
    [
      "import { defineRecipe, File, Directory, z } from 'meshvm';",
      'export default defineRecipe({',
      "  name: 'motd',",
      '  attributes: z.strictObject({ text: z.string() }),',
      "  declare: ({ text }: { text: string }) => [Directory({ path: '/etc' }), File({ path: '/etc/motd', content: text + '\\n', mode: 0o644 })],",
      '});',
    ].join('\n'),
  );
  const file = await writeRunlist(dir, 'site.yaml', 'name: site\nrecipes:\n  - recipe: ./motd.ts\n    attributes: { text: welcome }\n');
  const result = await meshvm(['converge', file, '--root', root], { cwd: dir });
  t.is(result.exitCode, 0, result.stderr);
  t.is(await fs.readFile(path.join(root, 'etc/motd'), 'utf8'), 'welcome\n');
});

test('the same ref twice runs once when equal, and fails naming both declarations when not', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const entry = (content: string) =>
    `  - recipe: files\n    attributes:\n      directories: [{ path: /etc }]\n      files: [{ path: /etc/x, content: "${content}" }]\n`;
  const same = await writeRunlist(dir, 'same.yaml', `name: same\nrecipes:\n${entry('a')}${entry('a')}`);
  const ok = await meshvm(['converge', same, '--root', root, '--json']);
  t.is(ok.exitCode, 0, ok.stderr);
  t.is(JSON.parse(ok.stdout).summary.total, 2);
  const differ = await writeRunlist(dir, 'differ.yaml', `name: differ\nrecipes:\n${entry('a')}${entry('b')}`);
  const bad = await meshvm(['converge', differ, '--root', root]);
  t.is(bad.exitCode, 1);
  t.regex(
    bad.stderr,
    /file\[\/etc\/x\]: declared twice with different specs: at recipes\/files\.ts:\d+ \(.*differ\.yaml:3 recipes\[0\]\) and at recipes\/files\.ts:\d+ \(.*differ\.yaml:7 recipes\[1\]\)/,
  );
});

test('--help and --version', async (t) => {
  const help = await meshvm(['--help']);
  t.is(help.exitCode, 0);
  t.regex(help.stdout, /meshvm converge RUNLIST/);
  t.regex(help.stdout, /--detailed-exitcode/);
  const version = await meshvm(['--version']);
  t.is(version.stdout.trim(), JSON.parse(await fs.readFile(path.join(PROJECT, 'package.json'), 'utf8')).version);
});

test("the README's main command, npm run demo, works where its scratch root does not exist yet, twice", async (t) => {
  const parent = await scratchRoot(t);
  const root = path.join(parent, 'demo-root');
  const run = () => execa('npm', ['run', '-s', 'demo'], { cwd: PROJECT, env: { MESHVM_DEMO_ROOT: root, NO_COLOR: '1' }, reject: false });
  const first = await run();
  t.is(first.exitCode, 0, String(first.stderr));
  t.regex(String(first.stdout), /converged: 11 resources, 11 changed, 0 failed/);
  t.is(await fs.readFile(path.join(root, 'etc/dnsmasq.d/kubedns'), 'utf8'), DOCS_KUBEDNS);
  const second = await run();
  t.regex(String(second.stdout), /converged, nothing to do: 11 resources, 0 changed, 0 failed/);
});
