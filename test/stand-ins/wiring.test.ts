// Self-test of the Vault Kubernetes secrets engine (Vault API v1) wired to the Kubernetes API v1.33 stand-in.
import test from 'ava';
import { call } from './http-client.ts';
import { startKubernetes } from './kubernetes.ts';
import { startVault } from './vault.ts';

test('a token from Vault kubernetes/creds is accepted by the Kubernetes stand-in and bounded by its rules', async (t) => {
  const kube = await startKubernetes({
    serviceAccounts: ['vm-ns/vm-bootstrap'],
    rbac: { 'system:serviceaccount:vm-ns:vm-bootstrap': [{ verbs: ['get'], resources: ['configmaps'], namespaces: ['vm-ns'] }] },
  });
  t.teardown(() => kube.stop());
  const vault = await startVault({
    tls: true,
    policies: { mesh: [{ path: 'kubernetes/creds/mesh', capabilities: ['update'] }] },
    kubernetes: {
      roles: { mesh: { serviceAccountName: 'vm-bootstrap', allowedKubernetesNamespaces: ['vm-ns'] } },
      mint: (r) =>
        kube.tokens.mint({
          namespace: r.kubernetesNamespace,
          serviceAccount: r.serviceAccountName,
          expirationSeconds: r.ttlSeconds,
          ...(r.audiences ? { audiences: r.audiences } : {}),
        }),
    },
  });
  t.teardown(() => vault.stop());
  kube.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': 'PEM' });

  const vaultToken = vault.issueToken({ policies: ['mesh'] });
  const creds = await call(`${vault.url}/v1/kubernetes/creds/mesh`, {
    method: 'POST',
    ca: vault.caPem!,
    headers: { 'x-vault-token': vaultToken },
    body: { kubernetes_namespace: 'vm-ns', ttl: '20m' },
  });
  t.is(creds.status, 200);
  const saToken: string = creds.json().data.service_account_token;
  const get = (path: string): Promise<number> =>
    call(`${kube.url}${path}`, { ca: kube.caPem, headers: { authorization: `Bearer ${saToken}` } }).then((r) => r.status);
  t.is(await get('/api/v1/namespaces/vm-ns/configmaps/istio-ca-root-cert'), 200);
  t.is(await get('/api/v1/namespaces/istio-system/configmaps/istio'), 403);
  t.is(kube.tokens.lookup(saToken)?.user, 'system:serviceaccount:vm-ns:vm-bootstrap');

  const tooShort = await call(`${vault.url}/v1/kubernetes/creds/mesh`, {
    method: 'POST',
    ca: vault.caPem!,
    headers: { 'x-vault-token': vaultToken },
    body: { kubernetes_namespace: 'vm-ns', ttl: 300 },
  });
  t.is(tooShort.status, 500);
  t.regex(tooShort.json().errors[0], /may not specify a duration less than 10 minutes/);
});
