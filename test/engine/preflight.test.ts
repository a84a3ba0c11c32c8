// Preflight through the real CLI on scratch roots: every prepare runs after planning and before the first change, in plan and
// converge; a failure changes nothing and prints one line; downloads are verified into the cache (plan hashes without keeping).
// The artifact store is a loopback https server (node:https, the test CA) standing in for the site's artifact store.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { meshvm, PROJECT, scratchRoot, seed, snapshot, writeRunlist } from '../helpers/scratch.ts';
import { testPki } from '../stand-ins/tls.ts';

const MODULE = path.join(PROJECT, 'test/fixtures/recipes/preflight.ts');

function runlist(attributes: object): string {
  return JSON.stringify({ name: 'preflight', recipes: [{ recipe: MODULE, attributes }] });
}

async function setUp(t: ExecutionContext, attributes: (log: string) => object) {
  const dir = await scratchRoot(t, 'meshvm-preflight-');
  const root = path.join(dir, 'root');
  await fs.mkdir(root);
  const log = path.join(dir, 'prepare.log');
  await fs.writeFile(log, '');
  const file = await writeRunlist(dir, 'runlist.yaml', runlist(attributes(log)));
  return { dir, root, log, file, logged: async () => (await fs.readFile(log, 'utf8')).split('\n').filter(Boolean) };
}

const lines = (text: string) => text.split('\n').filter(Boolean);

test('every prepare runs after planning and before the first change, in converge and in plan', async (t) => {
  const { root, file, logged } = await setUp(t, (log) => ({
    files: ['/first.txt'],
    probes: [
      { name: 'a', watch: '/first.txt' },
      { name: 'b', watch: '/probes/a' },
    ],
    log,
  }));
  const plan = await meshvm(['plan', file, '--root', root]);
  t.is(plan.exitCode, 0, plan.stderr);
  t.deepEqual(await logged(), ['a plan /first.txt: absent', 'b plan /probes/a: absent']);
  t.regex(plan.stdout, /^preflight: probe\[a\]: saw \/first.txt absent$/m, 'plan says what preflight checked');
  t.deepEqual(await fs.readdir(root), [], 'plan wrote nothing');

  const converge = await meshvm(['converge', file, '--root', root]);
  t.is(converge.exitCode, 0, converge.stderr);
  // the File declared first and probe a were not yet converged when either prepare ran
  t.deepEqual((await logged()).slice(2), ['a converge /first.txt: absent', 'b converge /probes/a: absent']);
  t.is(await fs.readFile(path.join(root, 'first.txt'), 'utf8'), 'written by the run\n');
  t.is(await fs.readFile(path.join(root, 'probes/b'), 'utf8'), 'done\n');
});

test('a failing preflight changes nothing, says so in one line, and leaves no report', async (t) => {
  const { root, file, logged } = await setUp(t, (log) => ({
    files: ['/first.txt'],
    probes: [
      { name: 'a', watch: '/first.txt' },
      { name: 'b', watch: '/first.txt', fail: 'the artifact store said no' },
    ],
    log,
  }));
  await seed(root, { '/etc/keep.conf': 'as it was\n' });
  const before = await snapshot(root);
  const converge = await meshvm(['converge', file, '--root', root]);
  t.is(converge.exitCode, 1);
  t.deepEqual(lines(converge.stderr), [
    `meshvm: preflight: probe[b] (declared at ${path.relative(PROJECT, MODULE)}:17): the artifact store said no; nothing was changed`,
  ]);
  t.deepEqual(await logged(), ['a converge /first.txt: absent', 'b converge /first.txt: absent']);
  t.deepEqual(await snapshot(root), before, 'the root is as it was: no File written, no last-run.json, no lock file');

  const json = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(json.exitCode, 1);
  const report = JSON.parse(json.stdout) as { outcome: string; error: string };
  t.is(report.outcome, 'failed');
  t.regex(report.error, /^preflight: probe\[b\] .*: the artifact store said no; nothing was changed$/);
  const plan = await meshvm(['plan', file, '--root', root, '--detailed-exitcode']);
  t.is(plan.exitCode, 1, 'plan fails the same way');
  t.regex(plan.stderr, /^meshvm: preflight: probe\[b\] .*nothing was changed$/);
  t.deepEqual(await snapshot(root), before);
});

test('a converge into a new root that fails its preflight removes the root again', async (t) => {
  const { dir, file } = await setUp(t, (log) => ({ files: ['/first.txt'], probes: [{ name: 'a', watch: '/first.txt', fail: 'no' }], log }));
  const root = path.join(dir, 'fresh');
  const converge = await meshvm(['converge', file, '--root', root]);
  t.is(converge.exitCode, 1);
  t.regex(converge.stderr, /preflight: probe\[a\].*: no; nothing was changed/);
  t.is(await fs.stat(root).catch(() => undefined), undefined);
});

/** A loopback https server for one body; counts requests. */
async function artifactStore(t: ExecutionContext, body: Buffer) {
  const pki = await testPki();
  let requests = 0;
  const server = createServer({ cert: pki.certPem, key: pki.keyPem }, (_req, res) => {
    requests++;
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/artifact.bin`, caPem: pki.caPem, requests: () => requests };
}

test('downloads are verified into the cache before the first change; a wrong sha256 removes what preflight fetched', async (t) => {
  const body = Buffer.from('an artifact of the site\n'.repeat(1000));
  const sha256 = createHash('sha256').update(body).digest('hex');
  const store = await artifactStore(t, body);
  const wrong = '0'.repeat(64);
  const caFile = '/etc/meshvm/artifact-ca.pem';
  const dir = await scratchRoot(t, 'meshvm-preflight-');
  const root = path.join(dir, 'root');
  await seed(root, { [caFile]: store.caPem });
  const run = async (command: string, artifacts: object[]) =>
    meshvm([command, await writeRunlist(dir, 'runlist.yaml', runlist({ files: ['/first.txt'], artifacts })), '--root', root]);

  // the good one is fetched into the cache, the second is refused: the cache, its directories and the File are not there after
  const before = await snapshot(root);
  const bad = await run('converge', [
    { name: 'good', url: store.url, sha256, caFile },
    { name: 'bad', url: store.url, sha256: wrong, caFile },
  ]);
  t.is(bad.exitCode, 1);
  t.deepEqual(lines(bad.stderr), [
    `meshvm: preflight: artifact[bad] (declared at ${path.relative(PROJECT, MODULE)}:16): the download of ${store.url} has sha256 ${sha256}, not the ${wrong} the spec requires; refusing it; nothing was changed`,
  ]);
  t.is(store.requests(), 2);
  t.deepEqual(await snapshot(root), before, 'nothing changed: no cache directory, no staged file, no File');

  // plan streams it through sha256 and keeps nothing
  const plan = await run('plan', [{ name: 'good', url: store.url, sha256, caFile }]);
  t.is(plan.exitCode, 0, plan.stderr);
  t.regex(plan.stdout, new RegExp(`^preflight: artifact\\[good\\]: ${body.length} bytes, not kept$`, 'm'));
  t.deepEqual(await snapshot(root), before, 'plan wrote nothing');

  const good = await run('converge', [{ name: 'good', url: store.url, sha256, caFile }]);
  t.is(good.exitCode, 0, good.stderr);
  t.is(
    createHash('sha256')
      .update(await fs.readFile(path.join(root, 'var/cache/meshvm/artifacts/good')))
      .digest('hex'),
    sha256,
  );
  t.is(await fs.readFile(path.join(root, 'opt/good.installed'), 'utf8'), `${sha256}\n`);

  // a CA file that is no PEM is refused naming it, before anything is fetched
  await seed(root, { [caFile]: 'not a certificate\n' });
  const requests = store.requests();
  const badCa = await run('plan', [{ name: 'other', url: store.url, sha256, caFile }]);
  t.is(badCa.exitCode, 1);
  t.deepEqual(lines(badCa.stderr), [
    `meshvm: preflight: artifact[other] (declared at ${path.relative(PROJECT, MODULE)}:16): the CA file ${caFile} (caFile) holds no PEM certificate (-----BEGIN CERTIFICATE-----); nothing was changed`,
  ]);
  t.is(store.requests(), requests);
});

test("NODE_TLS_REJECT_UNAUTHORIZED=0 in meshvm's environment does not turn a download's certificate check off", async (t) => {
  const body = Buffer.from('an artifact of the site\n');
  const sha256 = createHash('sha256').update(body).digest('hex');
  const store = await artifactStore(t, body);
  const dir = await scratchRoot(t, 'meshvm-preflight-');
  const root = path.join(dir, 'root');
  await fs.mkdir(root);
  // no caFile: the test CA is not among Node's, so the store's certificate is not to be trusted
  const file = await writeRunlist(dir, 'runlist.yaml', runlist({ files: ['/first.txt'], artifacts: [{ name: 'good', url: store.url, sha256 }] }));
  const plan = await meshvm(['plan', file, '--root', root], { env: { NODE_TLS_REJECT_UNAUTHORIZED: '0' } });
  t.is(plan.exitCode, 1);
  t.regex(plan.stderr, /downloading https:\/\/127\.0\.0\.1:\d+\/artifact\.bin failed: (self[- ]signed|unable to (get|verify))/i);
  t.is(store.requests(), 0, 'nothing was asked of a server whose certificate was not checked');
});
