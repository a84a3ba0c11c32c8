// cluster.keepAccess (on by default): the Kubernetes access read from Vault kept between runs under /run/meshvm (0600), against the Vault
// (API v1) and Kubernetes API (v1.33) stand-ins; Vault calls counted from the Vault stand-in's log and the report.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startMeshLab, VM_SA, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

const CACHE_DIR = 'run/meshvm/cluster-access';

const runlist = (lab: MeshLab, keepAccess?: boolean) =>
  JSON.stringify({
    name: 'keep-access',
    attributes: { flow: 'classic', namespace: 'vm-ns', serviceAccount: 'vm-sa', cluster: { ...lab.cluster, ...(keepAccess !== undefined && { keepAccess }) } },
    recipes: [{ recipe: 'istio-proxy-user' }, { recipe: 'cluster-env' }, { recipe: 'certs' }],
  });

async function setup(t: Parameters<typeof scratchRoot>[0], keepAccess?: boolean) {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  const file = await writeRunlist(lab.dir, 'keep-access.yaml', runlist(lab, keepAccess));
  const run = async (command: string) => {
    const result = await meshvm([command, file, '--root', root, '--json']);
    t.is(result.exitCode, 0, result.stderr);
    t.false(`${result.stdout}${result.stderr}`.includes('scoped-token'), 'the kept token never in the output');
    return JSON.parse(result.stdout) as { apiCalls: Record<string, number>; summary: { changed: number } };
  };
  const cacheFiles = async () => (await fs.readdir(path.join(root, CACHE_DIR)).catch(() => [] as string[])).filter((n) => n.endsWith('.json'));
  return { root, lab, file, run, cacheFiles };
}

const vaultPaths = (lab: MeshLab, from: number) => lab.vault.calls.slice(from).map((c) => `${c.method} ${c.path} ${c.status}`);

test('kept access: the first converge logs in and keeps it (0600 in a 0700 dir), then a no-op converge and plan make no Vault call', async (t) => {
  const { root, lab, run, cacheFiles } = await setup(t);
  const first = await run('converge');
  t.deepEqual(vaultPaths(lab, 0), ['POST /v1/auth/approle/login 200', 'GET /v1/secret/data/meshvm/cluster-a 200'], 'no revoke: the token is kept');
  t.is(first.apiCalls.vault, 2);
  const [name] = await cacheFiles();
  t.truthy(name);
  const stat = await fs.stat(path.join(root, CACHE_DIR, name!));
  t.is(stat.mode & 0o777, 0o600);
  t.is((await fs.stat(path.join(root, CACHE_DIR))).mode & 0o777, 0o700);

  const before = lab.vault.calls.length;
  const second = await run('converge');
  t.is(second.summary.changed, 0);
  t.is(second.apiCalls.vault ?? 0, 0);
  const plan = await run('plan');
  t.is(plan.apiCalls.vault ?? 0, 0);
  t.deepEqual(vaultPaths(lab, before), [], 'the Vault stand-in saw nothing');
  t.true(lab.vault.state.tokens.size >= 1);
});

test('changing keepInputs (or writing keepAccess: true out) keeps using the kept access: its file is named by how the cluster is reached', async (t) => {
  const { lab, file, run, cacheFiles } = await setup(t);
  await run('converge');
  const kept = await cacheFiles();
  t.is(kept.length, 1);
  for (const extra of [{ keepInputs: '2h' }, { keepAccess: true, keepInputs: 0 }]) {
    await fs.writeFile(
      file,
      JSON.stringify({ ...JSON.parse(runlist(lab)), attributes: { ...JSON.parse(runlist(lab)).attributes, cluster: { ...lab.cluster, ...extra } } }),
    );
    const before = lab.vault.calls.length;
    t.is((await run('converge')).apiCalls.vault ?? 0, 0, `no Vault call with ${JSON.stringify(extra)}`);
    t.deepEqual(vaultPaths(lab, before), []);
    t.deepEqual(await cacheFiles(), kept, 'the same kept file, none orphaned beside it');
  }
});

test('keepAccess: false logs in and revokes every run (3 Vault calls a run) and keeps nothing', async (t) => {
  const { lab, run, cacheFiles } = await setup(t, false);
  const expected = ['POST /v1/auth/approle/login 200', 'GET /v1/secret/data/meshvm/cluster-a 200', 'POST /v1/auth/token/revoke-self 204'];
  t.is((await run('converge')).apiCalls.vault, 3);
  t.deepEqual(vaultPaths(lab, 0), expected);
  const before = lab.vault.calls.length;
  t.is((await run('converge')).apiCalls.vault, 3);
  t.deepEqual(vaultPaths(lab, before), expected);
  t.deepEqual(await cacheFiles(), []);
  t.true(
    [...lab.vault.state.tokens.values()].every((token) => token.revoked === true),
    'no live Vault token left',
  );
});

test('kept access the API server refuses (its identity lost its rights: 403): forgotten, one fresh login, kept again', async (t) => {
  const { lab, run } = await setup(t);
  await run('converge');
  // the operator rotates the scoped token: the kept one stops working
  lab.vault.putSecret('secret', 'meshvm/cluster-a', { server: lab.kube.url, 'ca.crt': lab.kube.caPem, token: 'scoped-token-2' });
  lab.kube.tokens.add('scoped-token-2', { user: VM_SA, groups: ['system:serviceaccounts'] });
  lab.kube.tokens.add('scoped-token', { user: 'system:anonymous-revoked', groups: [] });
  const before = lab.vault.calls.length;
  const third = await run('converge');
  t.is(third.summary.changed, 0);
  t.deepEqual(vaultPaths(lab, before), ['POST /v1/auth/approle/login 200', 'GET /v1/secret/data/meshvm/cluster-a 200']);
  const after = lab.vault.calls.length;
  await run('converge');
  t.deepEqual(vaultPaths(lab, after), [], 'the new access is kept');
});

test('expired kept access is forgotten and read again; plan does not rewrite it', async (t) => {
  const { root, lab, run, cacheFiles } = await setup(t);
  await run('converge');
  const file = path.join(root, CACHE_DIR, (await cacheFiles())[0]!);
  const kept = JSON.parse(await fs.readFile(file, 'utf8'));
  await fs.writeFile(file, JSON.stringify({ ...kept, expiresAt: Date.now() - 1000 }), { mode: 0o600 });
  const before = lab.vault.calls.length;
  await run('plan');
  t.true(JSON.parse(await fs.readFile(file, 'utf8')).expiresAt < Date.now(), 'plan wrote nothing');
  t.true(vaultPaths(lab, before).includes('POST /v1/auth/token/revoke-self 204'), "plan's own login is revoked, as without keepAccess");
  const mid = lab.vault.calls.length;
  await run('converge');
  t.deepEqual(vaultPaths(lab, mid), ['POST /v1/auth/approle/login 200', 'GET /v1/secret/data/meshvm/cluster-a 200']);
  t.true(JSON.parse(await fs.readFile(file, 'utf8')).expiresAt > Date.now() + 60_000, 'kept again, until the new lease ends');
});

test('offboard revokes the kept Vault token and forgets the access', async (t) => {
  const { lab, run, cacheFiles, file, root } = await setup(t);
  await run('converge');
  t.is((await cacheFiles()).length, 1);
  const result = await meshvm(['offboard', file, '--root', root, '--json']);
  t.is(result.exitCode, 0, result.stderr);
  t.deepEqual(await cacheFiles(), []);
  t.true(lab.vault.calls.some((c) => c.path === '/v1/auth/token/revoke-self' && c.status === 204));
  t.true(
    [...lab.vault.state.tokens.values()].every((token) => token.revoked === true),
    'no live Vault token left',
  );
});
