// The far side of a guest, run inside its network namespace (`ip netns exec NS node lab-server.ts CONFIG`): the Vault and
// Kubernetes stand-ins seeded as Istio's docs describe the cluster, an https artifact server standing for object storage,
// istiod on the east-west gateway's address (test/e2e/istiod.ts: certificates, auto-registration, the name table), and for
// an AWS lab the Route53 stand-in with Vault's AWS IAM login. Prints one JSON line when ready, answers JSON-line commands
// on stdin, exits when stdin closes.
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import fs from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { startKubernetes, startRoute53, startVault } from '../stand-ins/index.ts';
import type { VaultStandIn } from '../stand-ins/index.ts';
import { AUTO_REGISTRATION_RULES, MESH_RULES, VM_SA } from '../helpers/mesh-lab.ts';
import { startIstiod } from './istiod.ts';

export interface LabConfig {
  /** Fixed ports (the user-data is rendered before the guest, and so this server, exists). */
  vaultPort: number;
  artifactPort: number;
  /** Files served at https://127.0.0.1:PORT/<name>. */
  artifactDir: string;
  /** Also Vault's certificate (the VM trusts its CA: cloud-init's ca_certs). */
  artifactCert: { certPem: string; keyPem: string; caPem: string };
  /** The response-wrapping token the user-data carries: it wraps the AppRole's secret_id (single use, 15 minutes). */
  wrappingToken: string;
  /** Vault starts stopped (nothing listens on its port): "unreachable at boot". */
  vaultDown?: boolean;
  /** Where istiod's port (15012) listens: the east-west gateway address the cluster reports (none: not listened on). */
  istiodAddress?: string;
  /** The east-west gateway's Service publishes this hostname (an AWS load balancer) instead of its address. */
  eastwestHostname?: string;
  /**
   * An AWS lab: Vault also takes an AWS IAM login for `role` from the instance role `arn` (whose signatures it checks with
   * the secret key), and a Route53 stand-in serves the private hosted zone.
   */
  aws?: { zone: { id: string; name: string }; role: string; arn: string; accessKeyId: string; secretAccessKey: string };
  /**
   * A full VM reaches this server through qemu's guestfwd at another address (10.0.2.100): the Kubernetes API is then
   * offered at https://<address>:<kubePort> by a proxy whose certificate (from `pki`, naming that address) the KV secret
   * tells the VM to trust.
   */
  public?: { address: string; kubePort: number; pki: { caPem: string; certPem: string; keyPem: string } };
}

export interface LabReady {
  vault: string;
  kube: string;
  artifacts: string;
  /** The Route53 stand-in's endpoint (AWS lab). */
  route53?: string;
  /** The unix socket answering for istiod at istiodAddress:15012 (relayed there by the lab, test/e2e/relay.ts). */
  istiodSocket?: string;
}

export type LabRequest =
  | { cmd: 'vault-stop' | 'vault-start' | 'stats' }
  /**
   * istiod moves to another address (the load balancer's new one): answers for it (the result: its unix socket), drops the
   * old address and its connections.
   */
  | { cmd: 'istiod-move'; address: string };
export type LabCommand = { id: number } & LabRequest;

export interface LabStats {
  vaultCalls: number;
  kubeCalls: string[];
  tokenRequests: number;
  artifactRequests: { path: string; status: number }[];
  /** The sidecar's connections to istiod (test/e2e/istiod.ts). */
  istiod: { address: string; identity?: string; entry?: string; error?: string; at: string; closedAt?: string }[];
  /** WorkloadEntries in the cluster: namespace/name and address. */
  workloadEntries: { name: string; address: string; annotations: Record<string, string> }[];
  /** WorkloadGroups in the cluster: namespace/name. */
  workloadGroups: string[];
  route53: { calls: string[]; records: { name: string; type: string; ttl?: number; values?: string[] }[] };
}

const config = JSON.parse(process.argv[2] ?? '{}') as LabConfig;
const EASTWEST = '10.150.0.6';

const kube = await startKubernetes({
  serviceCIDRs: { kubernetes: ['10.63.240.0/20'] },
  tokens: { 'scoped-token': { user: VM_SA, groups: ['system:serviceaccounts'] } },
  rbac: { [VM_SA]: [...MESH_RULES, ...AUTO_REGISTRATION_RULES] },
  serviceAccounts: ['vm-ns/vm-sa', 'vm-ns/meshvm-bootstrap'],
});
// Istio as its chart installs it: the mesh config, the injector's values, istiod (the istiod flow reads them)
kube.objects.installIstio();
kube.objects.setService(
  'istio-system',
  'istio-eastwestgateway',
  { type: 'LoadBalancer', clusterIP: '10.63.240.20', ports: [{ port: 15012 }, { port: 15443 }] },
  { loadBalancer: { ingress: [config.eastwestHostname ? { hostname: config.eastwestHostname } : { ip: EASTWEST }] } },
);
kube.objects.setService('kube-system', 'kube-dns', { type: 'ClusterIP', clusterIP: '10.150.0.7' });
kube.objects.setService('default', 'kubernetes', { type: 'ClusterIP', clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443 }] });
// istiod: its CA's root in every namespace (istio-ca-root-cert), its port on the gateway's address
const istiod = await startIstiod(kube, { addresses: [] });
const istiodSocket = config.istiodAddress ? await istiod.listen(config.istiodAddress) : undefined;
kube.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': istiod.rootPem });
const route53 = config.aws ? await startRoute53({ zones: [{ name: config.aws.zone.name, id: config.aws.zone.id, private: true }] }) : undefined;

// Vault, stoppable and restartable on the same port (the VM's node file names it)
const vaultPort = config.vaultPort;
let vault: VaultStandIn | undefined;
// the Kubernetes API as the VM sees it: the stand-in itself, or the proxy in front of it
let kubeAccess = { server: kube.url, caPem: kube.caPem };
if (config.public) {
  const upstream = kube;
  const proxy = createHttpsServer({ cert: config.public.pki.certPem, key: config.public.pki.keyPem }, (req, res) => {
    const up = httpsRequest(
      {
        host: '127.0.0.1',
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: `127.0.0.1:${upstream.port}` },
        ca: upstream.caPem,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve, reject) => proxy.once('error', reject).listen(config.public!.kubePort, '127.0.0.1', resolve));
  kubeAccess = { server: `https://${config.public.address}:${config.public.kubePort}`, caPem: config.public.pki.caPem };
}

async function vaultStart(): Promise<VaultStandIn> {
  const v = await startVault({
    port: vaultPort,
    tls: true,
    pki: config.artifactCert,
    policies: { mesh: [{ path: 'secret/data/meshvm/*', capabilities: ['read'] }] },
    appRoles: { meshvm: { roleId: 'role-id-lab', secretId: 'secret-id-lab', policies: ['mesh'] } },
    ...(config.aws && {
      aws: {
        roles: {
          [config.aws.role]: {
            policies: ['mesh'],
            boundIamPrincipalArns: [config.aws.arn.replace(/^arn:aws:sts::(\d+):assumed-role\/([^/]+)\/.*$/, 'arn:aws:iam::$1:role/$2')],
          },
        },
        identities: { [config.aws.accessKeyId]: { arn: config.aws.arn, secretAccessKey: config.aws.secretAccessKey } },
      },
    }),
  });
  v.putSecret('secret', 'meshvm/cluster-a', { server: kubeAccess.server, 'ca.crt': kubeAccess.caPem, token: 'scoped-token' });
  v.wrap({ secret_id: 'secret-id-lab', secret_id_accessor: 'accessor-lab', secret_id_ttl: 0, secret_id_num_uses: 0 }, 900, config.wrappingToken);
  return v;
}
if (!config.vaultDown) vault = await vaultStart();
let vaultCalls = 0;
const countVault = () => {
  vaultCalls += vault?.calls.length ?? 0;
};

// the artifact store: GET /<name> from the directory, nothing else
const artifactRequests: { path: string; status: number }[] = [];
const artifacts = createHttpsServer({ cert: config.artifactCert.certPem, key: config.artifactCert.keyPem }, (req, res) => {
  const name = decodeURIComponent(new URL(req.url ?? '/', 'https://x').pathname.slice(1));
  const done = (status: number) => artifactRequests.push({ path: `/${name}`, status });
  if (req.method !== 'GET' || !/^[\w.-]+$/.test(name)) {
    done(404);
    res.writeHead(404).end();
    return;
  }
  fs.readFile(path.join(config.artifactDir, name)).then(
    (body) => {
      done(200);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body);
    },
    () => {
      done(404);
      res.writeHead(404).end();
    },
  );
});
await new Promise<void>((resolve, reject) => artifacts.once('error', reject).listen(config.artifactPort, '127.0.0.1', resolve));

const ready: LabReady = {
  vault: `https://127.0.0.1:${vaultPort}`,
  kube: kube.url,
  artifacts: `https://127.0.0.1:${config.artifactPort}`,
  ...(route53 && { route53: route53.endpoint }),
  ...(istiodSocket && { istiodSocket }),
};
process.stdout.write(JSON.stringify({ ready }) + '\n');

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line) as LabCommand;
  let result: unknown;
  try {
    if (command.cmd === 'vault-stop') {
      countVault();
      await vault?.stop();
      vault = undefined;
    } else if (command.cmd === 'vault-start') {
      vault ??= await vaultStart();
    } else if (command.cmd === 'istiod-move') {
      const from = config.istiodAddress;
      result = await istiod.listen(command.address);
      config.istiodAddress = command.address;
      if (from && from !== command.address) await istiod.close(from);
    } else if (command.cmd === 'stats') {
      const stats: LabStats = {
        vaultCalls: vaultCalls + (vault?.calls.length ?? 0),
        kubeCalls: kube.calls.map((c) => c.action ?? `${c.method} ${c.path}`),
        tokenRequests: kube.calls.filter((c) => c.action === 'create serviceaccounts/token').length,
        artifactRequests,
        istiod: istiod.connections,
        workloadEntries: kube.objects.list('workloadentries').map((e) => ({
          name: `${e.metadata.namespace}/${e.metadata.name}`,
          address: String((e['spec'] as { address?: string }).address),
          annotations: (e.metadata['annotations'] ?? {}) as Record<string, string>,
        })),
        workloadGroups: kube.objects.list('workloadgroups').map((g) => `${g.metadata.namespace}/${g.metadata.name}`),
        route53: {
          calls: route53?.calls.map((c) => c.action ?? `${c.method} ${c.path}`) ?? [],
          records: config.aws && route53 ? route53.records(config.aws.zone.id) : [],
        },
      };
      result = stats;
    }
    process.stdout.write(JSON.stringify({ id: command.id, ok: true, result }) + '\n');
  } catch (error) {
    process.stdout.write(JSON.stringify({ id: command.id, ok: false, error: String(error) }) + '\n');
  }
}
await vault?.stop();
await kube.stop();
await istiod.stop();
await route53?.stop();
artifacts.closeAllConnections();
artifacts.close();
process.exit(0); // and the Kubernetes proxy, if any, with it
