// Per-recipe `cluster` attributes: one connection per distinct cluster configuration per run, each recipe answered by its own cluster.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startKubernetes, testPki, type Call } from '../stand-ins/index.ts';
import { MESH_RULES, VM_SA, startMeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

type Context = Parameters<typeof scratchRoot>[0];

interface ClusterShape {
  /** The istio-eastwestgateway LoadBalancer address (istiod for VMs). */
  eastwest: string;
  /** The kube-dns ClusterIP. */
  kubeDns: string;
}

/**
 * One cluster's Kubernetes API server (the stand-in speaks API v1.33 with RBAC and TokenRequest) with its own root CA,
 * east-west gateway and DNS addresses, issuer and bearer token; and on the VM's root, the files a
 * `cluster: { server, caFile, tokenFile }` attribute points at (as cloud-init would have written them).
 */
async function startCluster(t: Context, root: string, name: string, shape: ClusterShape) {
  const token = `bootstrap-token-${name}`;
  const kube = await startKubernetes({
    issuer: `https://${name}.clusters.example.com`,
    tokens: { [token]: { user: VM_SA, groups: ['system:serviceaccounts'] } },
    rbac: { [VM_SA]: MESH_RULES },
    serviceAccounts: ['vm-ns/vm-sa', 'vm-ns/meshvm-bootstrap'],
  });
  t.teardown(() => kube.stop());
  kube.objects.installIstio({ clusterName: name });
  kube.objects.setService(
    'istio-system',
    'istio-eastwestgateway',
    { type: 'LoadBalancer', ports: [{ port: 15012 }] },
    { loadBalancer: { ingress: [{ ip: shape.eastwest }] } },
  );
  kube.objects.setService('kube-system', 'kube-dns', { type: 'ClusterIP', clusterIP: shape.kubeDns });
  const pki = await testPki({ fresh: true });
  kube.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': pki.caPem });
  const dir = path.join(root, 'etc/meshvm', name);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'ca.crt'), kube.caPem);
  await fs.writeFile(path.join(dir, 'token'), token + '\n', { mode: 0o600 });
  const cluster = { server: kube.url, caFile: `/etc/meshvm/${name}/ca.crt`, tokenFile: `/etc/meshvm/${name}/token` };
  return { kube, cluster, rootPem: pki.caPem, token, issuer: `https://${name}.clusters.example.com`, ...shape };
}

const workload = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', ports: [9080] };
/** The same value with every object's keys in reverse order: equal configuration, different text. */
const reversedKeys = (value: unknown): unknown =>
  value && typeof value === 'object' && !Array.isArray(value)
    ? Object.fromEntries(
        Object.entries(value)
          .reverse()
          .map(([k, v]) => [k, reversedKeys(v)]),
      )
    : value;
const count = (calls: readonly Call[], action: string) => calls.filter((c) => c.action === action).length;
/** The stand-in's calls as "METHOD path status" lines, for messages. */
const log = (calls: readonly Call[]) => calls.map((c) => `${c.method} ${c.path} ${c.status}`).join('\n');

test('a runlist with two different cluster attributes does what the README says: each recipe reads its own cluster, one connection each', async (t) => {
  const root = await scratchRoot(t);
  // two clusters of one mesh, each behind its own API server stand-in: different root CAs, east-west gateways, DNS addresses and token issuers
  const a = await startCluster(t, root, 'cluster-a', { eastwest: '10.150.0.6', kubeDns: '10.150.0.7' });
  const b = await startCluster(t, root, 'cluster-b', { eastwest: '10.160.0.16', kubeDns: '10.160.0.17' });
  const dir = await scratchRoot(t, 'meshvm-runlist-');
  // cluster A for every recipe (shared attributes); dns alone is given cluster B in its own entry, which overrides it.
  // certs comes first: with one connection per run, dns would have been answered by A.
  const file = await writeRunlist(
    dir,
    'two-clusters.yaml',
    JSON.stringify({
      name: 'two-clusters',
      attributes: { flow: 'istiod', workload, registration: 'none', cluster: a.cluster },
      recipes: [
        { recipe: 'istio-proxy-user' },
        { recipe: 'certs' },
        { recipe: 'dns', attributes: { mode: 'dnsmasq', routesToClusterIps: true, dnsmasq: { manage: false }, resolver: 'none', cluster: b.cluster } },
      ],
    }),
  );
  const result = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(result.exitCode, 0, result.stderr);
  const read = (p: string) => fs.readFile(path.join(root, p), 'utf8');

  // certs, reaching A: A's root certificate, A's east-west gateway for istiod, a token A's issuer signed
  t.is(await read('etc/certs/root-cert.pem'), a.rootPem);
  t.not(a.rootPem, b.rootPem);
  t.regex(await read('etc/hosts'), /^10\.150\.0\.6 istiod\.istio-system\.svc$/m);
  t.notRegex(await read('etc/hosts'), /10\.160\./);
  const token = (await read('var/run/secrets/tokens/istio-token')).trim();
  t.is(JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')).iss, a.issuer);

  // dns, reaching B: B's cluster DNS and B's east-west gateway
  t.is(await read('etc/dnsmasq.d/kubedns'), 'server=/svc.cluster.local/10.160.0.17\naddress=/istiod/10.160.0.16\naddress=/istiod.istio-system/10.160.0.16\n');

  // each API server saw its own recipe's requests, once each, and none of the other's
  const onA = a.kube.calls;
  const onB = b.kube.calls;
  // every request answered; a WorkloadGroup the cluster does not have is a 404, which says it is absent
  t.true(
    onA.every((c) => c.status !== undefined && (c.status < 400 || (c.status === 404 && c.path.includes('/workloadgroups/')))),
    log(onA),
  );
  t.true(
    onB.every((c) => c.status !== undefined && c.status < 400),
    log(onB),
  );
  t.is(count(onA, 'get configmaps'), 3, `A: the root cert, the mesh config, the injector's values\n${log(onA)}`);
  t.is(count(onA, 'list services'), 1, `A: the east-west gateway for /etc/hosts\n${log(onA)}`);
  t.is(count(onA, 'create serviceaccounts/token'), 1, log(onA));
  t.is(count(onA, 'get services'), 0, `A was not asked for kube-dns\n${log(onA)}`);
  t.is(count(onB, 'get services'), 1, `B: kube-dns\n${log(onB)}`);
  t.is(count(onB, 'list services'), 1, `B: the east-west gateway for kubedns\n${log(onB)}`);
  t.is(count(onB, 'get configmaps'), 0, log(onB));
  t.is(count(onB, 'create serviceaccounts/token'), 0, log(onB));

  // neither bootstrap token reaches the output
  for (const secret of [a.token, b.token, token]) t.false(result.stdout.includes(secret) || result.stderr.includes(secret));

  // a re-converge changes nothing: still each recipe against its own cluster (a mix-up would rewrite the files)
  const again = JSON.parse((await meshvm(['converge', file, '--root', root, '--json'])).stdout);
  t.is(again.summary.changed, 0, JSON.stringify(again.resources.filter((r: { status: string }) => r.status !== 'unchanged')));
  t.is(count(a.kube.calls, 'get services'), 0);
  t.is(count(b.kube.calls, 'get configmaps'), 0);
});

test('two recipes with the same cluster attribute share one connection: one Vault login, one read of what both ask', async (t) => {
  const root = await scratchRoot(t);
  // the site's Vault (AppRole login, the scoped cluster token in KV v2) and the cluster's Kubernetes API server, both stand-ins
  const lab = await startMeshLab(t, root);
  const sameConfigReordered = reversedKeys(lab.cluster) as Record<string, unknown>;
  t.notDeepEqual(Object.keys(sameConfigReordered), Object.keys(lab.cluster));
  const file = await writeRunlist(
    lab.dir,
    'one-cluster.yaml',
    JSON.stringify({
      name: 'one-cluster',
      attributes: { flow: 'istiod', workload, registration: 'none' },
      recipes: [
        { recipe: 'istio-proxy-user' },
        // the same configuration written twice, in each recipe's own entry (every object's keys in another order in the second)
        { recipe: 'certs', attributes: { cluster: lab.cluster } },
        {
          recipe: 'dns',
          attributes: { mode: 'dnsmasq', routesToClusterIps: true, dnsmasq: { manage: false }, resolver: 'none', cluster: sameConfigReordered },
        },
      ],
    }),
  );
  const result = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(result.exitCode, 0, result.stderr);
  const report = JSON.parse(result.stdout) as { apiCalls: Record<string, number> };

  const vault = lab.vault.calls.map((c) => `${c.method} ${c.path}`);
  t.deepEqual(
    vault.filter((c) => c.includes('/login')),
    ['POST /v1/auth/approle/login'],
    'one login for both recipes',
  );
  t.deepEqual(
    vault.filter((c) => c.includes('/secret/')),
    ['GET /v1/secret/data/meshvm/cluster-a'],
    'one read of the cluster access',
  );
  t.is(report.apiCalls.vault, 2, `login and one KV read (the login kept for the next runs, keepAccess):\n${vault.join('\n')}`);

  // certs (istiod's address for /etc/hosts) and dns (the control plane for kubedns) both want the east-west gateway: asked once
  const kube = lab.kube.calls;
  t.is(count(kube, 'list services'), 1, log(kube));
  t.is(count(kube, 'get configmaps'), 3, `the root cert, the mesh config, the injector's values\n${log(kube)}`);
  t.is(count(kube, 'get services'), 1, log(kube));
  t.is(count(kube, 'create serviceaccounts/token'), 1, log(kube));
  const read = (p: string) => fs.readFile(path.join(root, p), 'utf8');
  t.is(await read('etc/certs/root-cert.pem'), lab.rootPem);
  t.regex(await read('etc/hosts'), /^10\.150\.0\.6 istiod\.istio-system\.svc$/m);
  t.is(await read('etc/dnsmasq.d/kubedns'), 'server=/svc.cluster.local/10.150.0.7\naddress=/istiod/10.150.0.6\naddress=/istiod.istio-system/10.150.0.6\n');
});
