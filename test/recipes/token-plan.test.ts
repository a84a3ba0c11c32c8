// The istio-token as a resource: `meshvm plan` of an istiod VM shows the mint as an action and never asks the API server; converge mints once.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { LAB_WORKLOAD, startMeshLab, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, snapshot, writeRunlist, type CliResult } from '../helpers/scratch.ts';

// Stand-ins (test/helpers/mesh-lab.ts): Vault (HTTP API v1, AppRole login, the scoped cluster token in KV v2) stands for the
// site's Vault; the Kubernetes stand-in (API v1.33, RBAC, TokenRequest signing real RS256 JWTs) stands for the cluster's API server.

const TOKEN = '/var/run/secrets/tokens/istio-token';
const TOKEN_REF = `istio_token[${TOKEN}]`;
const TOKEN_REQUEST = '/api/v1/namespaces/vm-ns/serviceaccounts/vm-sa/token';
const MINT_LINE = /^mint a token for vm-ns\/vm-sa \(audience istio-ca\), expires in 12 h$/;

interface ResourceReport {
  ref: string;
  status: string;
  changes: string[];
  actions?: string[];
}

/** An istiod-flow VM's files (the sidecar package and its units left out: a scratch root has no systemd). */
const istiodRunlist = (lab: MeshLab) =>
  JSON.stringify({
    name: 'istiod-token',
    attributes: {
      flow: 'istiod',
      workload: LAB_WORKLOAD,
      registration: 'none',
      cluster: lab.cluster,
    },
    recipes: [
      { recipe: 'istio-proxy-user' },
      { recipe: 'dns', attributes: { dnsmasq: { manage: false }, resolver: 'none' } },
      { recipe: 'cluster-env' },
      { recipe: 'certs' },
    ],
  });

/** Every request the API server saw that asks for a token (a TokenRequest, whichever service account). */
const tokenRequests = (lab: MeshLab) => lab.kube.calls.filter((c) => c.method === 'POST' && /\/serviceaccounts\/[^/]+\/token$/.test(c.path));

function report(t: import('ava').ExecutionContext, result: CliResult, exitCode = 0) {
  t.is(result.exitCode, exitCode, `exit code; stderr:\n${result.stderr}\nstdout:\n${result.stdout}`);
  return JSON.parse(result.stdout) as { mode: string; outcome: string; resources: ResourceReport[] };
}

function tokenEntry(t: import('ava').ExecutionContext, resources: ResourceReport[]): ResourceReport {
  const entries = resources.filter((r) => r.ref === TOKEN_REF);
  t.is(entries.length, 1, `one ${TOKEN_REF} in ${JSON.stringify(resources.map((r) => r.ref))}`);
  return entries[0]!;
}

test("the plan of an istiod VM shows the token as a planned action without minting (the Kubernetes stand-in's request log has no TokenRequest)", async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  const file = await writeRunlist(lab.dir, 'istiod.yaml', istiodRunlist(lab));

  // plan on a fresh root: the mint is an action, the API server is read (root cert, load balancers) but never asked for a token
  const fresh = await snapshot(root);
  const plan = report(t, await meshvm(['plan', file, '--root', root, '--json']));
  t.is(plan.mode, 'plan');
  const planned = tokenEntry(t, plan.resources);
  t.is(planned.status, 'would-change');
  t.is(planned.actions?.length, 1, JSON.stringify(planned));
  t.regex(planned.actions?.[0] ?? '', MINT_LINE);
  t.deepEqual(planned.changes, ['no token yet', planned.actions![0]!]);
  t.true(
    lab.kube.calls.some((c) => c.action === 'get configmaps' && c.status === 200),
    'plan did read the cluster (the root certificate): the stand-in was reached',
  );
  t.deepEqual(tokenRequests(lab), [], 'plan sent no TokenRequest');
  t.deepEqual(await snapshot(root), fresh, 'plan wrote nothing under the root');

  // converge: exactly one TokenRequest, the token where the sidecar reads it, 0600 and owned by istio-proxy
  const first = await meshvm(['converge', file, '--root', root, '--json']);
  const converged = report(t, first);
  t.is(tokenEntry(t, converged.resources).status, 'changed');
  t.is(tokenRequests(lab).length, 1, 'one TokenRequest');
  t.is(tokenRequests(lab)[0]!.path, TOKEN_REQUEST);
  t.is(tokenRequests(lab)[0]!.status, 201);
  const tokenFile = path.join(root, TOKEN);
  const token = (await fs.readFile(tokenFile, 'utf8')).trim();
  const [header, payload] = token.split('.');
  t.truthy(header && payload, 'a JWT');
  const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as { sub: string; aud: string[]; exp: number; iat: number };
  t.is(claims.sub, 'system:serviceaccount:vm-ns:vm-sa');
  t.deepEqual(claims.aud, ['istio-ca']);
  t.is(claims.exp - claims.iat, 43_200, 'asked for 12 h');
  const stat = await fs.stat(tokenFile);
  t.is(stat.mode & 0o777, 0o600);
  const passwd = await fs.readFile(path.join(root, 'etc/passwd'), 'utf8');
  const group = await fs.readFile(path.join(root, 'etc/group'), 'utf8');
  const [, uid] = /^istio-proxy:x:(\d+):/m.exec(passwd) ?? [];
  const [, gid] = /^istio-proxy:x:(\d+):/m.exec(group) ?? [];
  t.truthy(uid && gid, 'istio-proxy exists in the root');
  t.is(stat.uid, Number(uid));
  t.is(stat.gid, Number(gid));
  const lastRun = await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8');
  for (const [where, text] of [
    ['stdout', first.stdout],
    ['stderr', first.stderr],
    ['last-run.json', lastRun],
  ] as const) {
    t.false(text.includes(token), `the token is not in ${where}`);
    t.false(text.includes(payload!), `no part of the token is in ${where}`);
  }

  // plan again: the token on disk is good, nothing to mint
  const afterConverge = await snapshot(root);
  const again = report(t, await meshvm(['plan', file, '--root', root, '--json']));
  const kept = tokenEntry(t, again.resources);
  t.is(kept.status, 'unchanged', JSON.stringify(kept));
  t.deepEqual(kept.actions ?? [], []);
  t.is(tokenRequests(lab).length, 1, 'no further TokenRequest');
  t.deepEqual(await snapshot(root), afterConverge);

  // due by policy: renewing 13 h before expiry makes the fresh 12 h token due; plan says so and still does not mint
  const dueBySet = report(t, await meshvm(['plan', file, '--root', root, '--json', '--set', 'certs.renewBeforeSeconds=46800']));
  const renewing = tokenEntry(t, dueBySet.resources);
  t.is(renewing.status, 'would-change');
  t.true(renewing.changes.includes('the token is due for renewal'), JSON.stringify(renewing.changes));
  t.regex(renewing.actions?.[0] ?? '', MINT_LINE);
  t.is(tokenRequests(lab).length, 1, 'a due token is not minted by plan');
  t.deepEqual(await snapshot(root), afterConverge);

  // due by its own expiry: a token for vm-ns/vm-sa that expires in an hour (inside the default 6 h window)
  const now = Math.floor(Date.now() / 1000);
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const expiring = `${b64({ alg: 'RS256' })}.${b64({ aud: ['istio-ca'], sub: 'system:serviceaccount:vm-ns:vm-sa', iat: now - 39_600, exp: now + 3600 })}.c2lnbmF0dXJl`;
  await fs.writeFile(tokenFile, expiring + '\n');
  const beforeDuePlan = await snapshot(root);
  const dueByClock = report(t, await meshvm(['plan', file, '--root', root, '--json']));
  const due = tokenEntry(t, dueByClock.resources);
  t.is(due.status, 'would-change');
  t.is(due.actions?.length, 1);
  t.regex(due.actions?.[0] ?? '', MINT_LINE);
  t.deepEqual(due.changes, ['the token is due for renewal', due.actions![0]!], 'why, then what it would do');
  t.is(tokenRequests(lab).length, 1, 'still no TokenRequest from plan');
  t.deepEqual(await snapshot(root), beforeDuePlan);

  // converge replaces it: one more TokenRequest, a token good for 12 h again
  const renewed = report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(tokenEntry(t, renewed.resources).status, 'changed');
  t.is(tokenRequests(lab).length, 2);
  const fresher = (await fs.readFile(tokenFile, 'utf8')).trim();
  t.not(fresher, expiring);
  t.not(fresher, token);
  t.true(JSON.parse(Buffer.from(fresher.split('.')[1]!, 'base64url').toString('utf8')).exp >= now + 43_200 - 60);
  t.is((await fs.stat(tokenFile)).mode & 0o777, 0o600);
});
