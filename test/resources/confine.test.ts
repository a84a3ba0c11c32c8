// Commands a user wrote (Execute, its guards, a File's verify command) under --root run inside the root or not at all: a canary outside is never touched.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { localHost } from '../../engine/host-local.ts';
import { Execute } from '../../resources/execute.ts';
import { File } from '../../resources/file.ts';
import { converge, snapshot } from '../helpers/scratch.ts';
import { canaryOutside, exists, minimalRoot } from '../helpers/minimal-root.ts';

const TOOLS = ['/bin/sh', '/usr/bin/touch', '/usr/bin/test', '/usr/bin/grep'];

test('Execute under --root: the command and its guards run inside the root; the canary outside stays absent', async (t) => {
  const root = await minimalRoot(t, TOOLS);
  const canary = await canaryOutside(t);
  const guardCanary = await canaryOutside(t);
  const declare = () => [Execute({ name: 'touch canary', command: ['touch', canary], notIf: ['sh', '-c', `touch ${guardCanary}; test -e ${canary}`] })];
  const plan = await converge(localHost({ root }), declare(), 'plan');
  t.deepEqual(
    plan.resources.map((r) => r.status),
    ['would-change'],
  );
  t.true(
    await exists(path.join(root, guardCanary)),
    'the guard ran, inside the root (guards run in plan too: they must change nothing, this one shows where it ran)',
  );
  t.false(await exists(guardCanary), 'the guard did not touch this machine');
  const first = await converge(localHost({ root }), declare());
  t.false(first.failed, first.resources[0]?.error);
  t.true(await exists(path.join(root, canary)), 'the command wrote inside the root');
  t.false(await exists(canary), 'the command did not write on this machine');
  const second = await converge(localHost({ root }), declare());
  t.deepEqual(
    second.resources.map((r) => r.status),
    ['unchanged'],
    'the guard sees the file inside the root: nothing to do',
  );
});

test('Execute under --root whose program the root lacks is refused, naming the resource, and nothing runs', async (t) => {
  const root = await minimalRoot(t, ['/bin/sh']);
  const canary = await canaryOutside(t);
  const before = await snapshot(root);
  const result = await converge(localHost({ root }), [Execute({ name: 'make canary', command: ['touch', canary], creates: '/opt/done' })]);
  t.true(result.failed);
  t.regex(
    result.resources[0]!.error!,
    /^execute\[make canary\]: apply failed: `touch \S+` could not be run: the command `touch \S+` runs inside the root \S+ \(confined, as the machine being built would run it\), but the root has no touch .*set onHost: true in the spec to run it on this machine instead/,
  );
  t.false(await exists(canary));
  t.deepEqual(await snapshot(root), before);
});

test('Execute with onHost: true runs on this machine even under --root, as its spec says', async (t) => {
  const root = await minimalRoot(t, []);
  const canary = await canaryOutside(t);
  const result = await converge(localHost({ root }), [Execute({ name: 'host tool', command: ['touch', canary], onlyIf: ['true'], onHost: true })]);
  t.false(result.failed, result.resources[0]?.error);
  t.true(await exists(canary), 'written on the machine, as asked');
  t.false(await exists(path.join(root, canary)));
});

test("File's verify command under --root checks the staged file inside the root, and cannot write outside", async (t) => {
  const root = await minimalRoot(t, TOOLS);
  const canary = await canaryOutside(t);
  await fs.mkdir(path.join(root, 'etc'), { recursive: true });
  const verify = ['sh', '-c', `touch ${canary}; grep -q good "$0"`, '%{path}'];
  const refused = await converge(localHost({ root }), [File({ path: '/etc/app.conf', content: 'bad\n', verify })]);
  t.true(refused.failed);
  t.regex(refused.resources[0]!.error!, /refused the new content \(exit 1\)/);
  t.false(await exists(path.join(root, 'etc/app.conf')), 'the refused content never went live');
  const accepted = await converge(localHost({ root }), [File({ path: '/etc/app.conf', content: 'good\n', verify })]);
  t.false(accepted.failed, accepted.resources[0]?.error);
  t.is(await fs.readFile(path.join(root, 'etc/app.conf'), 'utf8'), 'good\n');
  t.true(await exists(path.join(root, canary)), 'the verify command ran inside the root');
  t.false(await exists(canary), 'and never on this machine');
});

test("File's verify command whose program the root lacks: refused, saying verifyOnHost, the live file untouched", async (t) => {
  const root = await minimalRoot(t, []);
  await fs.mkdir(path.join(root, 'etc'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/app.conf'), 'old\n');
  const result = await converge(localHost({ root }), [File({ path: '/etc/app.conf', content: 'new\n', verify: ['grep', '-q', 'new', '%{path}'] })]);
  t.true(result.failed);
  t.regex(
    result.resources[0]!.error!,
    /verify command `grep -q new %\{path\}` was not run: it runs inside the root \S+, but the root has no grep .*set verifyOnHost: true to run it on this machine; the live \/etc\/app\.conf was left untouched/,
  );
  t.is(await fs.readFile(path.join(root, 'etc/app.conf'), 'utf8'), 'old\n');
});
