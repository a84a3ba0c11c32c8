// A cluster as Istio's mesh-expansion docs describe it, behind the Vault (API v1) and Kubernetes (API v1.33) stand-ins.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { startKubernetes, startVault, testPki } from '../stand-ins/index.ts';
import type { KubernetesOptions, VaultOptions } from '../stand-ins/index.ts';
import { scratchRoot } from './scratch.ts';

export const VM_SA = 'system:serviceaccount:vm-ns:meshvm-bootstrap';

export interface MeshLab {
  kube: Awaited<ReturnType<typeof startKubernetes>>;
  vault: Awaited<ReturnType<typeof startVault>>;
  /** The `cluster` attribute of a runlist: Vault by AppRole, the scoped token in KV. */
  cluster: Record<string, unknown>;
  dir: string;
  rootPem: string;
  chainPem: string;
  keyPem: string;
}

export interface LabOptions {
  /** RBAC rules of the scoped token (default: what a mesh VM needs). */
  rules?: { verbs: string[]; resources: string[]; apiGroups?: string[]; resourceNames?: string[]; namespaces?: string[] }[];
  /** LoadBalancer addresses: IPs (docs) or AWS-style hostnames. */
  hostnames?: boolean;
  /** The real services' limits on the stand-ins (bench/fleet): the API server's seats, a Vault rate-limit quota. */
  kubeLimits?: KubernetesOptions['limits'];
  vaultRateLimit?: VaultOptions['rateLimit'];
}

/** The fleet view (clients/fleet-view.ts): the run's status on the VM's WorkloadEntry (any name: auto's is istiod's), or on its Lease. */
export const FLEET_VIEW_RULES = [
  { verbs: ['patch'], apiGroups: ['networking.istio.io'], resources: ['workloadentries'], namespaces: ['vm-ns'] },
  { verbs: ['get', 'update', 'patch'], apiGroups: ['networking.istio.io'], resources: ['workloadentries/status'], namespaces: ['vm-ns'] },
  { verbs: ['get', 'create', 'patch', 'delete'], apiGroups: ['coordination.k8s.io'], resources: ['leases'], namespaces: ['vm-ns'] },
];

export const MESH_RULES = [
  { verbs: ['get'], resources: ['configmaps'], resourceNames: ['istio-ca-root-cert'], namespaces: ['vm-ns'] },
  { verbs: ['get'], resources: ['secrets'], resourceNames: ['istio.vm-sa'], namespaces: ['vm-ns'] },
  { verbs: ['list'], resources: ['services'], namespaces: ['istio-system'] },
  { verbs: ['get'], resources: ['services'], namespaces: ['kube-system'] },
  { verbs: ['list'], apiGroups: ['networking.k8s.io'], resources: ['servicecidrs'] },
  { verbs: ['create'], resources: ['serviceaccounts/token'], namespaces: ['vm-ns'] },
  // the istiod flow reads the cluster's mesh: the mesh config and the injector's values, the system namespace's network, the WorkloadGroup
  { verbs: ['get'], resources: ['configmaps'], resourceNames: ['istio', 'istio-sidecar-injector'], namespaces: ['istio-system'] },
  { verbs: ['get'], resources: ['namespaces'], resourceNames: ['istio-system'] },
  { verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], namespaces: ['vm-ns'] },
  // verify reads the WorkloadEntry istiod registers for the VM
  { verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadentries'], namespaces: ['vm-ns'] },
  ...FLEET_VIEW_RULES,
];

/** The lab's VM workload (istiod flow): a WorkloadGroup reviews-vm in vm-ns, its service account vm-sa, one port. */
export const LAB_WORKLOAD = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', ports: [9080] };

/**
 * The recipes of runlists/istio-vm.yaml that a scratch root can hold (no sidecar package, the resolver left alone; no
 * interception, services or timer), for tests and the fleet simulation that converge an istiod-flow VM against the lab.
 */
export const SCRATCH_ISTIO_VM_RECIPES = [
  { recipe: 'istio-proxy-user' },
  { recipe: 'dns', attributes: { resolver: 'none' } },
  { recipe: 'cluster-env' },
  { recipe: 'sidecar', attributes: { package: { from: 'none' } } },
  { recipe: 'certs' },
  { recipe: 'registration' },
];

/**
 * What registration auto adds for the lab's workload: its WorkloadGroup ensured by server-side apply (a patch that creates
 * the object is authorized as create too). Apart from MESH_RULES so that a test can withhold it.
 */
export const AUTO_REGISTRATION_RULES = [
  {
    // delete: offboarding deletes the group meshvm made
    verbs: ['patch', 'create', 'get', 'delete'],
    apiGroups: ['networking.istio.io'],
    resources: ['workloadgroups'],
    resourceNames: ['reviews-vm'],
    namespaces: ['vm-ns'],
  },
];

/** `root` is the VM's root: the AppRole role_id and secret_id files and Vault's CA are written in its /etc/meshvm, as cloud-init would. */
export async function startMeshLab(t: ExecutionContext, root: string, options: LabOptions = {}): Promise<MeshLab> {
  const dir = await scratchRoot(t, 'meshvm-lab-');
  const kube = await startKubernetes({
    serviceCIDRs: { kubernetes: ['10.63.240.0/20'] },
    tokens: { 'scoped-token': { user: VM_SA, groups: ['system:serviceaccounts'] } },
    rbac: { [VM_SA]: options.rules ?? MESH_RULES },
    serviceAccounts: ['vm-ns/vm-sa', 'vm-ns/meshvm-bootstrap'],
    ...(options.kubeLimits && { limits: options.kubeLimits }),
  });
  t.teardown(() => kube.stop());
  // Istio as its chart installs it: the mesh config (trust domain cluster.local), the injector's values, istiod
  kube.objects.installIstio();
  const lb = (ip: string, host: string) => ({ loadBalancer: { ingress: [options.hostnames ? { hostname: host } : { ip }] } });
  kube.objects.setService(
    'istio-system',
    'istio-pilot-ilb',
    { type: 'LoadBalancer', ports: [{ port: 15011 }] },
    lb('10.150.0.6', 'pilot-1234.elb.us-east-1.amazonaws.com'),
  );
  kube.objects.setService(
    'istio-system',
    'mixer-ilb',
    { type: 'LoadBalancer', ports: [{ port: 9091 }] },
    lb('10.150.0.8', 'mixer-1234.elb.us-east-1.amazonaws.com'),
  );
  kube.objects.setService(
    'istio-system',
    'citadel-ilb',
    { type: 'LoadBalancer', ports: [{ port: 8060 }] },
    lb('10.150.0.9', 'citadel-1234.elb.us-east-1.amazonaws.com'),
  );
  kube.objects.setService(
    'istio-system',
    'istio-eastwestgateway',
    { type: 'LoadBalancer', ports: [{ port: 15012 }] },
    lb('10.150.0.6', 'eastwest-1234.elb.us-east-1.amazonaws.com'),
  );
  kube.objects.setService('kube-system', 'kube-dns', { type: 'ClusterIP', clusterIP: '10.150.0.7' });
  const pki = await testPki({ fresh: true });
  const chainPem = pki.certPem;
  kube.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': pki.caPem });
  kube.objects.setSecret('vm-ns', 'istio.vm-sa', { 'root-cert.pem': pki.caPem, 'cert-chain.pem': chainPem, 'key.pem': pki.keyPem }, 'istio.io/key-and-cert');

  const vault = await startVault({
    tls: true,
    policies: { mesh: [{ path: 'secret/data/meshvm/*', capabilities: ['read'] }] },
    appRoles: { meshvm: { roleId: 'role-id-lab', secretId: 'secret-id-lab', policies: ['mesh'] } },
    ...(options.vaultRateLimit && { rateLimit: options.vaultRateLimit }),
  });
  t.teardown(() => vault.stop());
  vault.putSecret('secret', 'meshvm/cluster-a', { server: kube.url, 'ca.crt': kube.caPem, token: 'scoped-token' });
  await fs.mkdir(path.join(root, 'etc/meshvm'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/meshvm/role-id'), 'role-id-lab\n', { mode: 0o600 });
  await fs.writeFile(path.join(root, 'etc/meshvm/secret-id'), 'secret-id-lab\n', { mode: 0o600 });
  await fs.writeFile(path.join(root, 'etc/meshvm/vault-ca.pem'), vault.caPem!);
  const cluster = {
    vault: {
      address: vault.url,
      caFile: '/etc/meshvm/vault-ca.pem',
      auth: { method: 'approle', roleIdFile: '/etc/meshvm/role-id', secretIdFile: '/etc/meshvm/secret-id' },
    },
    access: { kv: { path: 'meshvm/cluster-a' } },
  };
  return { kube, vault, cluster, dir, rootPem: pki.caPem, chainPem, keyPem: pki.keyPem };
}
