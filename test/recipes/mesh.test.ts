// The mesh-expansion recipes against the Vault (API v1) and Kubernetes API (v1.33) stand-ins, into scratch roots.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { loadRunlist } from '../../engine/runlist.ts';
import { builtins } from '../../recipes/index.ts';
import { LAB_WORKLOAD, startMeshLab, MESH_RULES, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, PROJECT, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';
import { startRoute53 } from '../stand-ins/index.ts';
import { DOCS_CLUSTER_ENV, DOCS_KUBEDNS, DOCS_SIDECAR_ENV } from '../helpers/docs.ts';

const classicRunlist = (lab: MeshLab, extra: string[] = []) =>
  JSON.stringify(
    {
      name: 'classic-lab',
      attributes: { flow: 'classic', namespace: 'vm-ns', serviceAccount: 'vm-sa', cluster: lab.cluster },
      recipes: [
        { recipe: 'istio-proxy-user' },
        {
          recipe: 'dns',
          attributes: {
            controlPlaneServices: { 'istio-mixer': 'mixer-ilb', 'istio-pilot': 'istio-pilot-ilb', 'istio-ca': 'citadel-ilb' },
            // the lab's kube-dns is a ClusterIP (the docs' example VM routes to the cluster's service range)
            routesToClusterIps: true,
            dnsmasq: { manage: false },
            resolver: 'none',
          },
        },
        { recipe: 'cluster-env' },
        { recipe: 'sidecar', attributes: { package: { from: 'none' }, inboundPorts: [27017, 3306, 8080] } },
        { recipe: 'certs' },
        ...extra.map((recipe) => ({ recipe })),
      ],
    },
    null,
    2,
  );

/** The units the istio-sidecar package installs, so that systemctl --root can enable them in a scratch root. */
async function fakeSidecarUnits(root: string) {
  await fs.mkdir(path.join(root, 'lib/systemd/system'), { recursive: true });
  for (const unit of ['istio', 'istio-auth-node-agent']) {
    await fs.writeFile(
      path.join(root, `lib/systemd/system/${unit}.service`),
      `[Service]\nExecStart=/usr/local/bin/${unit}-start.sh\n[Install]\nWantedBy=multi-user.target\n`,
    );
  }
}

test('every runlist in runlists/ validates, with its example node file where it needs one', async (t) => {
  const dir = path.join(PROJECT, 'runlists');
  const files = (await fs.readdir(dir)).filter((f) => f.endsWith('.yaml'));
  t.true(files.length >= 4);
  for (const file of files) {
    const node = path.join(PROJECT, 'examples/nodes', file);
    const hasNode = await fs.stat(node).then(
      () => true,
      () => false,
    );
    const runlist = await loadRunlist(path.join(dir, file), builtins, hasNode ? { nodeFile: { path: node, required: true } } : {});
    t.true(runlist.entries.length > 0, file);
  }
});

test('classic flow: kubedns, cluster.env and sidecar.env equal the docs line for line; a re-converge changes nothing', async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  const file = await writeRunlist(lab.dir, 'classic.yaml', classicRunlist(lab));
  const first = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(first.exitCode, 0, first.stderr);
  t.is(JSON.parse(first.stdout).apiCalls.vault, 2, 'login and one KV read; the login is kept (keepAccess), not revoked');
  const read = (p: string) => fs.readFile(path.join(root, p), 'utf8');
  t.is(await read('etc/dnsmasq.d/kubedns'), DOCS_KUBEDNS);
  t.is(await read('var/lib/istio/envoy/cluster.env'), DOCS_CLUSTER_ENV);
  t.is(await read('var/lib/istio/envoy/sidecar.env'), DOCS_SIDECAR_ENV);
  t.is(await read('etc/certs/root-cert.pem'), lab.rootPem);
  t.is(await read('etc/certs/cert-chain.pem'), lab.chainPem);
  const key = await fs.stat(path.join(root, 'etc/certs/key.pem'));
  t.is(key.mode & 0o777, 0o600);
  const [, uid] = /^istio-proxy:x:(\d+)/m.exec(await read('etc/passwd'))!;
  t.is(key.uid, Number(uid));
  t.false(first.stdout.includes('BEGIN PRIVATE KEY') || first.stderr.includes('PRIVATE KEY-----\nM'), 'the key never reaches the output');

  const second = await meshvm(['converge', file, '--root', root, '--json']);
  const report = JSON.parse(second.stdout);
  t.is(report.summary.changed, 0, second.stdout);
  t.is(report.apiCalls.vault ?? 0, 0, 'the access kept by the first run: no Vault call');
  // the secret's certificates are read every run; the service ranges, kube-dns and the control plane's addresses are kept
  t.is(report.apiCalls.kubernetes, 1, `kubernetes calls: ${report.apiCalls.kubernetes}`);
});

test('istiod flow: a root certificate rotated in the cluster gives exactly one cert update and one sidecar restart', async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  await fakeSidecarUnits(root);
  const runlist = JSON.stringify({
    name: 'istiod-lab',
    attributes: {
      flow: 'istiod',
      workload: LAB_WORKLOAD,
      registration: 'none',
      cluster: lab.cluster,
    },
    recipes: [
      { recipe: 'istio-proxy-user' },
      // dnsmasq by choice (the istiod flow's default is the sidecar's DNS proxy), forwarding to the lab's kube-dns ClusterIP
      { recipe: 'dns', attributes: { mode: 'dnsmasq', routesToClusterIps: true, dnsmasq: { manage: false }, resolver: 'none' } },
      { recipe: 'cluster-env' },
      { recipe: 'sidecar', attributes: { package: { from: 'none' }, inboundPorts: [9080] } },
      { recipe: 'certs' },
      { recipe: 'sidecar-services' },
    ],
  });
  const file = await writeRunlist(lab.dir, 'istiod.yaml', runlist);
  const first = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(first.exitCode, 0, first.stderr);
  const read = (p: string) => fs.readFile(path.join(root, p), 'utf8');
  t.is(await read('etc/dnsmasq.d/kubedns'), 'server=/svc.cluster.local/10.150.0.7\naddress=/istiod/10.150.0.6\naddress=/istiod.istio-system/10.150.0.6\n');
  t.is(
    await read('var/lib/istio/envoy/cluster.env'),
    // as istioctl writes it: the mesh config's proxy metadata, the workload's, sorted, quoted as istioctl quotes
    [
      "CANONICAL_REVISION='latest'",
      "CANONICAL_SERVICE='reviews-vm'",
      "ISTIO_INBOUND_PORTS='9080'",
      "ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15020'",
      `ISTIO_METAJSON_LABELS='{"service.istio.io/canonical-name":"reviews-vm","service.istio.io/canonical-revision":"latest"}'`,
      "ISTIO_META_CLUSTER_ID=''",
      "ISTIO_META_DNS_CAPTURE='true'",
      "ISTIO_META_MESH_ID=''",
      "ISTIO_META_NETWORK=''",
      `ISTIO_META_POD_PORTS='[{"name":"port-9080","containerPort":9080,"protocol":""}]'`,
      "ISTIO_META_WORKLOAD_NAME='reviews-vm'",
      "ISTIO_NAMESPACE='vm-ns'",
      "ISTIO_SERVICE='reviews-vm.vm-ns'",
      "ISTIO_SERVICE_CIDR='*'",
      "POD_NAMESPACE='vm-ns'",
      "SERVICE_ACCOUNT='vm-sa'",
      "TRUST_DOMAIN='cluster.local'",
      '',
    ].join('\n'),
  );
  t.regex(await read('etc/istio/config/mesh'), /^defaultConfig:\n {2}discoveryAddress: istiod\.istio-system\.svc:15012\n {2}proxyMetadata:\n/);
  t.regex(await read('etc/hosts'), /^10\.150\.0\.6 istiod\.istio-system\.svc$/m);
  const token = await fs.stat(path.join(root, 'var/run/secrets/tokens/istio-token'));
  t.is(token.mode & 0o777, 0o600);

  const noop = JSON.parse((await meshvm(['converge', file, '--root', root, '--json'])).stdout);
  t.is(noop.summary.changed, 0, 'the token on disk is still good: not minted again');
  t.deepEqual(noop.notifications, []);

  const rotated = await (await import('../stand-ins/index.ts')).testPki({ fresh: true });
  lab.kube.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': rotated.caPem });
  const after = JSON.parse((await meshvm(['converge', file, '--root', root, '--json'])).stdout);
  t.deepEqual(
    after.resources.filter((r: { status: string }) => r.status === 'changed').map((r: { ref: string }) => r.ref),
    ['file[/etc/certs/root-cert.pem]'],
  );
  t.deepEqual(
    after.notifications.map((n: { ref: string; status: string }) => `${n.ref} ${n.status}`),
    ['service[istio.service] refreshed'],
  );
  t.is(await read('etc/certs/root-cert.pem'), rotated.caPem);

  // after a reboot /var/run is empty: the token is minted again
  await fs.rm(path.join(root, 'var/run/secrets'), { recursive: true });
  const rebooted = JSON.parse((await meshvm(['converge', file, '--root', root, '--json'])).stdout);
  t.true(
    rebooted.resources.some((r: { ref: string; status: string }) => r.ref === 'istio_token[/var/run/secrets/tokens/istio-token]' && r.status === 'changed'),
  );
  t.false(JSON.stringify(rebooted).includes(await read('var/run/secrets/tokens/istio-token').then((s) => s.trim())), 'the token is not in the report');
});

test('a token without permission gives the named-permission error and nothing is written', async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root, { rules: MESH_RULES.filter((r) => !r.resources.includes('secrets')) });
  const file = await writeRunlist(lab.dir, 'classic.yaml', classicRunlist(lab));
  const before = await snapshot(root);
  const result = await meshvm(['converge', file, '--root', root]);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /may not get secrets "istio\.vm-sa" in namespace vm-ns/);
  t.deepEqual(await snapshot(root), before);
  t.true(
    lab.vault.calls.some((c) => c.path === '/v1/auth/token/revoke-self' && c.status === 204),
    'the failed run still revoked its Vault token',
  );
});

test('AWS: load-balancer hostnames, not IPs, still give a working configuration (Route53 CNAMEs, the zone searched)', async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root, { hostnames: true });
  const zone = { id: 'Z0123456789MESHVMLAB', name: 'mesh.internal.example.com' };
  const route53 = await startRoute53({ zones: [{ name: zone.name, id: zone.id }] });
  t.teardown(() => route53.stop());
  await fs.writeFile(path.join(root, 'etc/resolv.conf'), 'nameserver 10.0.0.2\n');
  const runlist = JSON.stringify({
    name: 'aws-lab',
    attributes: {
      flow: 'istiod',
      workload: { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa' },
      registration: 'none',
      cluster: lab.cluster,
      zone,
      search: [zone.name],
    },
    recipes: [
      { recipe: 'istio-proxy-user' },
      { recipe: 'aws', attributes: { endpoint: route53.endpoint, dnsServers: ['127.0.0.1:9'] } },
      // dnsmasq by choice, with the zone as a search domain (the istiod flow's default is the sidecar's DNS proxy)
      { recipe: 'dns', attributes: { mode: 'dnsmasq', routesToClusterIps: true, dnsmasq: { manage: false }, resolver: 'none' } },
      // istiod's line in /etc/hosts: the load balancer's name resolved (test/recipes/istioctl-golden.test.ts), given here
      { recipe: 'certs', attributes: { istiodAddress: '10.150.0.6' } },
    ],
  });
  const file = await writeRunlist(lab.dir, 'aws.yaml', runlist);
  const env = { AWS_ACCESS_KEY_ID: 'AKIDMESHVMLAB', AWS_SECRET_ACCESS_KEY: 'lab-secret-key', AWS_REGION: 'us-east-1' };
  const first = await meshvm(['converge', file, '--root', root, '--json'], { env });
  t.is(first.exitCode, 0, first.stderr);
  const records = route53
    .records(zone.id)
    .filter((r) => r.type === 'CNAME')
    .map((r) => `${r.name} ${r.values?.join(',')}`)
    .sort();
  t.deepEqual(records, [
    'istiod.istio-system.mesh.internal.example.com. eastwest-1234.elb.us-east-1.amazonaws.com',
    'istiod.mesh.internal.example.com. eastwest-1234.elb.us-east-1.amazonaws.com',
  ]);
  t.is(route53.calls.filter((c) => c.action === 'ChangeResourceRecordSets').length, 1, 'one batch');
  t.is(await fs.readFile(path.join(root, 'etc/dnsmasq.d/kubedns'), 'utf8'), 'server=/svc.cluster.local/10.150.0.7\n', 'no address= for a hostname');
  const second = JSON.parse((await meshvm(['converge', file, '--root', root, '--json'], { env })).stdout);
  t.is(second.summary.changed, 0);
  t.is(route53.calls.filter((c) => c.action === 'ChangeResourceRecordSets').length, 1, 'no second batch');
});

test('bad input: a node file against the schema, a port out of range, a service account Kubernetes rejects, a missing Vault path', async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  const base = JSON.parse(classicRunlist(lab));
  const cases: [string, (r: typeof base) => void, RegExp, string?][] = [
    ['node file', () => {}, /node\.yaml:2: attributes\.flow: Invalid option: expected one of "classic"\|"istiod"/, 'attributes:\n  flow: istio-classic\n'],
    [
      'port',
      (r) => {
        r.recipes[3].attributes.inboundPorts = [8080, 65536];
      },
      /classic\.yaml:\d+: recipes\[3\]\.attributes\.inboundPorts\[1\]: port must be between 1 and 65535/,
    ],
    [
      'service account',
      (r) => {
        r.attributes.serviceAccount = 'VM_SA';
      },
      /classic\.yaml:\d+: attributes\.serviceAccount: expected a Kubernetes service account name/,
    ],
    [
      'vault path',
      (r) => {
        r.attributes.cluster.access.kv.path = 'meshvm/nope';
      },
      /no KV v2 secret at secret\/data\/meshvm\/nope/,
    ],
  ];
  for (const [what, change, expect, node] of cases) {
    const runlist = structuredClone(base);
    change(runlist);
    const file = await writeRunlist(lab.dir, 'classic.yaml', JSON.stringify(runlist, null, 2));
    const args = ['converge', file, '--root', root];
    if (node) args.push('--node', await writeRunlist(lab.dir, 'node.yaml', node));
    const before = await snapshot(root);
    const result = await meshvm(args);
    t.is(result.exitCode, 1, what);
    t.regex(result.stderr, expect, what);
    t.deepEqual(await snapshot(root), before, `${what}: nothing written`);
  }
});
