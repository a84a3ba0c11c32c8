// Preflight asks the cluster before the VM changes: an istiod VM whose token may not mint, or whose WorkloadGroup may not be
// applied, is refused with its root as it was; allowed, the preflight's one TokenRequest is the token the run writes.
// Stand-ins (test/helpers/mesh-lab.ts): Vault (AppRole login, the scoped cluster token in KV v2) stands for the site's Vault;
// the Kubernetes stand-in (API v1.33, RBAC, TokenRequest, server-side apply with dryRun=All) for the cluster's API server.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { MESH_RULES, startMeshLab, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, seed, snapshot, writeRunlist } from '../helpers/scratch.ts';

const WORKLOAD = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', ports: [9080] };
const TOKEN_RULE = MESH_RULES.find((r) => r.resources.includes('serviceaccounts/token'))!;
const GROUP_RULE = { verbs: ['get', 'create', 'patch'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], namespaces: ['vm-ns'] };

/** An istiod VM's files and its registration (auto: the WorkloadGroup); no sidecar package (a scratch root has no dpkg). */
const runlist = (lab: MeshLab) =>
  JSON.stringify({
    name: 'preflight-mesh',
    attributes: { flow: 'istiod', workload: WORKLOAD, registration: 'auto', cluster: lab.cluster },
    recipes: [
      { recipe: 'istio-proxy-user' },
      { recipe: 'dns', attributes: { dnsmasq: { manage: false }, resolver: 'none' } },
      { recipe: 'cluster-env' },
      { recipe: 'certs' },
      { recipe: 'registration' },
    ],
  });

const tokenRequests = (lab: MeshLab) => lab.kube.calls.filter((c) => c.method === 'POST' && c.path.endsWith('/serviceaccounts/vm-sa/token'));
const lines = (text: string) => text.split('\n').filter(Boolean);

async function world(t: import('ava').ExecutionContext, rules: unknown[]) {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/hosts': '127.0.0.1 localhost\n', '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n', '/etc/group': 'root:x:0:\n' });
  const lab = await startMeshLab(t, root, { rules: rules as typeof MESH_RULES });
  return { root, lab, file: await writeRunlist(lab.dir, 'vm.yaml', runlist(lab)) };
}

test('a token the cluster will not mint: refused in preflight, one line, the root as it was', async (t) => {
  const { root, lab, file } = await world(t, [...MESH_RULES.filter((r) => r !== TOKEN_RULE), GROUP_RULE]);
  const before = await snapshot(root);
  const result = await meshvm(['converge', file, '--root', root]);
  t.is(result.exitCode, 1);
  const error = lines(result.stderr);
  t.is(error.length, 1, result.stderr);
  t.regex(
    error[0]!,
    /^meshvm: preflight: istio_token\[\/var\/run\/secrets\/tokens\/istio-token\] \(declared at [^)]+\): .*may not create serviceaccounts\/token .*; nothing was changed$/,
  );
  t.deepEqual(await snapshot(root), before, 'no account, no file, no report');
  t.is(tokenRequests(lab).length, 1, 'the one refused TokenRequest');
});

test('a WorkloadGroup the token may not apply: refused by the dry run in preflight, before the files', async (t) => {
  const { root, lab, file } = await world(t, [...MESH_RULES, { ...GROUP_RULE, verbs: ['get'] }]);
  const before = await snapshot(root);
  const result = await meshvm(['converge', file, '--root', root]);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /^meshvm: preflight: workload_group\[vm-ns\/reviews-vm\] .*may not patch workloadgroups.*; nothing was changed\n?$/);
  t.deepEqual(await snapshot(root), before);
  t.is(lab.kube.objects.get('workloadgroups', 'vm-ns', 'reviews-vm'), undefined);
});

test('allowed: preflight mints the token the run writes (one TokenRequest) and dry-runs the WorkloadGroup once; a re-converge asks neither', async (t) => {
  const { root, lab, file } = await world(t, [...MESH_RULES, GROUP_RULE]);
  const plan = await meshvm(['plan', file, '--root', root]);
  t.is(plan.exitCode, 0, plan.stderr);
  t.regex(plan.stdout, /^preflight: istio_token\[\S+\]: no token asked for in plan/m);
  t.is(tokenRequests(lab).length, 0, 'plan asks for no token');

  const first = await meshvm(['converge', file, '--root', root]);
  t.is(first.exitCode, 0, first.stderr);
  t.is(tokenRequests(lab).length, 1, 'one TokenRequest: the preflight mint is the token written');
  const token = await fs.readFile(path.join(root, 'var/run/secrets/tokens/istio-token'), 'utf8');
  t.regex(token, /^[\w-]+\.[\w-]+\.[\w-]+\n$/);
  const dryRuns = () => lab.kube.calls.filter((c) => c.query.dryRun === 'All').length;
  t.is(dryRuns(), 2, "plan's and converge's dry run of the WorkloadGroup");

  const started = Date.now();
  const again = await meshvm(['converge', file, '--root', root]);
  t.log(`no-op converge with its preflight: ${Date.now() - started} ms wall (CLI start included)`);
  t.is(again.exitCode, 0, again.stderr);
  t.is(tokenRequests(lab).length, 1);
  t.is(dryRuns(), 2, 'nothing to change: no dry run');
});
