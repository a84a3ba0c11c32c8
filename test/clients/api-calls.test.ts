// API calls of a typical no-op converge of a mesh VM, against the Vault API v1, Kubernetes API v1.33 and Route 53 API 2013-04-01 stand-ins, as the JSON report counts them.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { apiCalls } from '../../engine/api-calls.ts';
import { localHost } from '../../engine/host-local.ts';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import { VaultClient } from '../../clients/vault.ts';
import type { VaultConfigInput } from '../../clients/vault.ts';
import { Route53Records } from '../../resources/route53-record.ts';
import { startKubernetes, startRoute53, startVault, testPki } from '../stand-ins/index.ts';
import { converge, scratchRoot } from '../helpers/scratch.ts';

/** A root certificate as istiod publishes it (the client refuses anything that is not PEM certificates). */
const ROOT = (await testPki()).caPem;

const SA = 'system:serviceaccount:vm-ns:vm-bootstrap';
const AWS = { accessKeyId: 'AKIDCOUNTTEST', secretAccessKey: 'count-test-aws-secret', sessionToken: 'count-session' };
const ZONE = 'Z00000000000000COUNTS';

async function world(t: ExecutionContext) {
  const kube = await startKubernetes({
    tokens: { 'scoped-token': { user: SA, groups: ['system:serviceaccounts'] } },
    rbac: {
      [SA]: [
        { verbs: ['get'], resources: ['configmaps'], resourceNames: ['istio-ca-root-cert'], namespaces: ['vm-ns'] },
        { verbs: ['list'], resources: ['services'], namespaces: ['istio-system'] },
        { verbs: ['get'], resources: ['services'], resourceNames: ['kube-dns'], namespaces: ['kube-system'] },
        { verbs: ['list'], apiGroups: ['networking.k8s.io'], resources: ['servicecidrs'] },
        { verbs: ['create'], resources: ['serviceaccounts/token'], namespaces: ['vm-ns'] },
      ],
    },
    serviceAccounts: ['vm-ns/vm'],
  });
  t.teardown(() => kube.stop());
  kube.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': ROOT });
  kube.objects.setService(
    'istio-system',
    'istio-eastwestgateway',
    { type: 'LoadBalancer', ports: [{ port: 15012 }] },
    { loadBalancer: { ingress: [{ hostname: 'abc.elb.amazonaws.com' }] } },
  );
  kube.objects.setService('kube-system', 'kube-dns', { type: 'ClusterIP', clusterIP: '10.96.0.10' });
  const vault = await startVault({
    policies: { mesh: [{ path: 'secret/data/meshvm/*', capabilities: ['read'] }] },
    aws: {
      roles: { vm: { policies: ['mesh'] } },
      identities: { [AWS.accessKeyId]: { arn: 'arn:aws:sts::123456789012:assumed-role/vm-role/i-0abc', secretAccessKey: AWS.secretAccessKey } },
    },
  });
  t.teardown(() => vault.stop());
  vault.putSecret('secret', 'meshvm/cluster-a', { server: kube.url, 'ca.crt': kube.caPem, token: 'scoped-token' });
  const route53 = await startRoute53({
    zones: [{ name: 'mesh.example.com', id: ZONE, records: [{ name: 'istiod.mesh.example.com', type: 'CNAME', ttl: 60, values: ['abc.elb.amazonaws.com'] }] }],
  });
  t.teardown(() => route53.stop());
  return { kube, vault, route53 };
}

/** What the mesh-expansion recipes read on every run: Vault access, then the four Kubernetes facts. */
async function readSequence(vaultConfig: VaultConfigInput, options: ConstructorParameters<typeof VaultClient>[1]) {
  const vault = new VaultClient(vaultConfig, options);
  const access = await vault.kubernetesAccess({ kv: { path: 'meshvm/cluster-a' } });
  const kube = new KubernetesClient(access);
  const facts = {
    rootCert: await kube.rootCert('vm-ns'),
    serviceCidrs: (await kube.serviceCidrs()).cidrs,
    controlPlane: (await kube.controlPlaneAddresses()).map((a) => a.address),
    clusterDns: await kube.clusterDns(),
  };
  return { vault, kube, facts };
}

test.serial('no-op converge of a mesh VM (AWS IAM login): Vault 2 + the revoke at close, Kubernetes 4', async (t) => {
  const { vault } = await world(t);
  apiCalls.reset();
  const { vault: client, facts } = await readSequence(
    { address: vault.url, insecure: true, auth: { method: 'aws', role: 'vm' } },
    { awsCredentials: AWS, warn: () => {} },
  );
  t.deepEqual(facts, { rootCert: ROOT, serviceCidrs: ['10.96.0.0/12'], controlPlane: ['abc.elb.amazonaws.com'], clusterDns: '10.96.0.10' });
  const beforeClose = apiCalls.snapshot();
  await client.close();
  const total = apiCalls.snapshot();
  t.log(`before close: ${JSON.stringify(beforeClose)}; with the revoke at close: ${JSON.stringify(total)}`);
  t.deepEqual(beforeClose, { kubernetes: 4, vault: 2 });
  t.is(total['vault'], 3, 'login + KV read + revoke-self at close');
  t.is(total['kubernetes'], 4);
});

test.serial('no-op converge with an operator token: Vault 1 (no login, no revoke)', async (t) => {
  const { vault } = await world(t);
  const token = vault.issueToken({ policies: ['mesh'] });
  apiCalls.reset();
  const { vault: client } = await readSequence(
    { address: vault.url, insecure: true, auth: { method: 'token' } },
    { env: { VAULT_TOKEN: token }, warn: () => {} },
  );
  await client.close();
  t.deepEqual(apiCalls.snapshot(), { kubernetes: 4, vault: 1 });
});

// Route53 with the DNS check answering right: 0 calls, counted in test/resources/route53-record.test.ts (it needs a dnsmasq).
test.serial('Route53 once the records are right, without the DNS check: 1 list per record, no change', async (t) => {
  const { route53 } = await world(t);
  const root = await scratchRoot(t);
  const declare = (dnsCheck: false) => [
    Route53Records({
      zoneId: ZONE,
      endpoint: route53.endpoint,
      credentials: AWS,
      dnsCheck,
      records: [{ name: 'istiod.mesh.example.com', type: 'CNAME', values: ['abc.elb.amazonaws.com'] }],
    }),
  ];
  apiCalls.reset();
  const listed = await converge(localHost({ root }), declare(false));
  t.is(listed.resources[0]?.status, 'unchanged');
  t.deepEqual(apiCalls.snapshot(), { route53: 1 });
  t.is(route53.calls.length, 1);
});
