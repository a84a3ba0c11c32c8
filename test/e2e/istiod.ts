// The lab's istiod, at the east-west gateway's address(es), port 15012 (a unix socket each, relayed there): what istiod does for a VM's sidecar when it connects,
// in miniature, for the stand-in pilot-agent of test/e2e/fixtures/istio-sidecar. One JSON line each way instead of gRPC over
// mTLS: up the istio-token, a CSR and the node metadata; down the signed chain and the name table (or an error). Then the
// connection stays open, as the xDS stream does. Faithful in what meshvm verify and the tests look at:
//  - the token is authenticated as istiod's TokenReview would (the Kubernetes stand-in's minted tokens: not expired,
//    audience istio-ca, a ServiceAccount), the certificate is signed by the mesh's root (the CA whose certificate is the
//    istio-ca-root-cert ConfigMap) for spiffe://<trustDomain of the istio ConfigMap>/ns/<namespace>/sa/<account>, 24 h;
//  - auto-registration as pilot/pkg/autoregistration/controller.go does it: ISTIO_META_AUTO_REGISTER_GROUP set, the entry
//    <group>-<ip>[-<network>] is made from the WorkloadGroup's template (address, labels merged with the group's and the
//    proxy's, network, annotations istio.io/autoRegistrationGroup, workloadController, connectedAt, health checks when the
//    proxy has a readiness probe, the group as controller owner); an identity that is not the template's service account
//    or namespace is refused; no group, refused; a disconnect marks istio.io/disconnectedAt and, after the grace period
//    (PILOT_WORKLOAD_ENTRY_GRACE_PERIOD, 10 s), deletes the entry unless the proxy came back;
//  - the name table (DNS proxying): <service>.<namespace>.svc.cluster.local of every Service with a ClusterIP.
// Left out: health reports (no probe in these tests), xDS itself, mTLS.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import type { KubeObject, KubernetesStandIn } from '../stand-ins/index.ts';

const run = promisify(execFile);
/** features.WorkloadEntryCleanupGracePeriod's default. */
const GRACE_MS = 10_000;
const CERT_DAYS = 1;
const GROUP_ANNOTATION = 'istio.io/autoRegistrationGroup';

export interface IstiodConnection {
  /** The address the sidecar dialled (the gateway's, as /etc/hosts sent it). */
  address: string;
  /** ServiceAccount of the token: namespace/name. */
  identity?: string;
  /** The WorkloadEntry registered for it. */
  entry?: string;
  error?: string;
  at: string;
  closedAt?: string;
}

export interface IstiodStandIn {
  /** PEM of the mesh's root CA (put it in istio-ca-root-cert). */
  rootPem: string;
  /** Connections that said hello (a bare connect, as verify's probe makes, is not one), oldest first. */
  connections: IstiodConnection[];
  /**
   * Answers for address:15012 too, on a unix socket (returned) that a relay in the far network namespace connects port
   * 15012 of that address to (test/e2e/relay.ts).
   */
  listen(address: string): Promise<string>;
  /** Stops answering for address and drops the connections made through it (a load balancer gone). */
  close(address: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startIstiod(kube: KubernetesStandIn, o: { addresses: readonly string[]; systemNamespace?: string }): Promise<IstiodStandIn> {
  const systemNamespace = o.systemNamespace ?? 'istio-system';
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-istiod-'));
  const p = (name: string) => path.join(dir, name);
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    p('ca.key'),
    '-out',
    p('ca.pem'),
    '-days',
    '3650',
    '-subj',
    '/O=cluster.local/CN=meshvm e2e istiod root CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  const rootPem = await fs.readFile(p('ca.pem'), 'utf8');
  const connections: IstiodConnection[] = [];
  const servers = new Map<string, { server: Server; sockets: Set<Socket>; path: string }>();
  const timers = new Set<NodeJS.Timeout>();

  const sign = async (csr: string, spiffe: string): Promise<string> => {
    const id = randomBytes(6).toString('hex');
    await fs.writeFile(p(`${id}.csr`), csr);
    await fs.writeFile(
      p(`${id}.ext`),
      `subjectAltName=critical,URI:${spiffe}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n`,
    );
    try {
      await run('openssl', [
        'x509',
        '-req',
        '-in',
        p(`${id}.csr`),
        '-CA',
        p('ca.pem'),
        '-CAkey',
        p('ca.key'),
        '-set_serial',
        `0x${randomBytes(16).toString('hex')}`,
        '-days',
        String(CERT_DAYS),
        '-sha256',
        '-extfile',
        p(`${id}.ext`),
        '-out',
        p(`${id}.pem`),
      ]);
      return (await fs.readFile(p(`${id}.pem`), 'utf8')) + rootPem;
    } finally {
      await Promise.all(['csr', 'ext', 'pem'].map((x) => fs.rm(p(`${id}.${x}`), { force: true })));
    }
  };

  const trustDomain = () => {
    const mesh = kube.objects.get('configmaps', systemNamespace, 'istio')?.['data'] as { mesh?: string } | undefined;
    return ((parseYaml(mesh?.mesh ?? '') ?? {}) as { trustDomain?: string }).trustDomain ?? 'cluster.local';
  };

  const nameTable = () => {
    const table: Record<string, string[]> = {};
    for (const svc of kube.objects.list('services')) {
      const ip = (svc['spec'] as { clusterIP?: string } | undefined)?.clusterIP;
      if (ip && ip !== 'None') table[`${svc.metadata.name}.${svc.metadata.namespace}.svc.cluster.local`] = [ip];
    }
    return table;
  };

  /** RegisterWorkload for an auto-registering proxy: the entry's name, or an error as istiod refuses the stream. */
  const register = (node: HelloNode, identity: { namespace: string; name: string }): string | undefined => {
    const group = node.metadata?.['AUTO_REGISTER_GROUP'];
    const ip = node.ips?.[0];
    if (!group || !ip || !node.namespace) return undefined;
    const network = node.metadata?.['NETWORK'] ?? '';
    let name = [group, ip.replaceAll(':', '-'), ...(network ? [network] : [])].join('-');
    if (name.length > 253) name = name.slice(name.length - 253);
    const now = new Date().toISOString();
    const namespace = node.namespace;
    const existing = kube.objects.get('workloadentries', namespace, name);
    const entry: KubeObject = existing ?? fromGroup(name, group, ip, network, { ...node, namespace });
    const spec = (entry['spec'] ?? {}) as { serviceAccount?: string };
    if (identity.namespace !== entry.metadata.namespace)
      throw new Error(`registration of WorkloadEntry namespace mismatch: "${identity.namespace}" vs "${entry.metadata.namespace}"`);
    if (spec.serviceAccount && spec.serviceAccount !== identity.name)
      throw new Error(`registration of WorkloadEntry service account mismatch: "${identity.name}" vs "${spec.serviceAccount}"`);
    const annotations = { ...(entry.metadata['annotations'] as Record<string, string> | undefined) };
    delete annotations['istio.io/disconnectedAt'];
    kube.objects.put({
      ...entry,
      kind: 'WorkloadEntry',
      metadata: { ...entry.metadata, annotations: { ...annotations, 'istio.io/workloadController': 'istiod-lab', 'istio.io/connectedAt': now } },
    });
    return name;
  };

  const fromGroup = (name: string, group: string, ip: string, network: string, node: HelloNode & { namespace: string }): KubeObject => {
    const wg = kube.objects.get('workloadgroups', node.namespace, group);
    if (!wg) throw new Error(`auto-registration WorkloadEntry of ${ip} failed: cannot find WorkloadGroup ${node.namespace}/${group}`);
    const spec = wg['spec'] as { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; template?: Record<string, unknown> };
    const template = structuredClone(spec.template ?? {}) as Record<string, unknown> & { labels?: Record<string, string> };
    const labels = { ...template.labels, ...spec.metadata?.labels, ...node.labels };
    return {
      kind: 'WorkloadEntry',
      metadata: {
        name,
        namespace: node.namespace,
        labels,
        annotations: {
          [GROUP_ANNOTATION]: group,
          ...spec.metadata?.annotations,
          ...(node.readinessProbe ? { 'proxy.istio.io/health-checks-enabled': 'true' } : {}),
        },
        ownerReferences: [{ apiVersion: 'networking.istio.io/v1', kind: 'WorkloadGroup', name: group, uid: wg.metadata['uid'], controller: true }],
      },
      spec: { ...template, address: ip, labels, ...(network ? { network } : {}) },
    };
  };

  /** QueueUnregisterWorkload: disconnectedAt now; deleted after the grace period unless the proxy reconnected. */
  const unregister = (namespace: string, name: string) => {
    const entry = kube.objects.get('workloadentries', namespace, name);
    if (!entry) return;
    const annotations = { ...(entry.metadata['annotations'] as Record<string, string>) };
    delete annotations['istio.io/connectedAt'];
    annotations['istio.io/disconnectedAt'] = new Date().toISOString();
    kube.objects.put({ ...entry, kind: 'WorkloadEntry', metadata: { ...entry.metadata, annotations } });
    const timer = setTimeout(() => {
      timers.delete(timer);
      const now = kube.objects.get('workloadentries', namespace, name);
      const a = now?.metadata['annotations'] as Record<string, string> | undefined;
      if (now && a?.[GROUP_ANNOTATION] && !a['istio.io/connectedAt']) kube.objects.delete('workloadentries', namespace, name);
    }, GRACE_MS);
    timers.add(timer);
  };

  const hello = async (socket: Socket, c: IstiodConnection, line: string) => {
    const answer = (body: object) => socket.write(`${JSON.stringify(body)}\n`);
    try {
      const h = JSON.parse(line) as Hello;
      const who = kube.tokens.lookup(h.token ?? '');
      if (!who?.serviceAccount || (who.expiresAt !== undefined && who.expiresAt <= Date.now()) || !who.audiences?.includes('istio-ca'))
        throw new Error('authentication failed: the token is not a valid istio-ca token of a ServiceAccount');
      const sa = who.serviceAccount;
      c.identity = `${sa.namespace}/${sa.name}`;
      const certChain = await sign(h.csr ?? '', `spiffe://${trustDomain()}/ns/${sa.namespace}/sa/${sa.name}`);
      const entry = register(h.node ?? {}, sa);
      if (entry) {
        c.entry = `${h.node!.namespace}/${entry}`;
        if (socket.destroyed) unregister(h.node!.namespace!, entry);
        else socket.once('close', () => unregister(h.node!.namespace!, entry));
      }
      answer({ certChain, nameTable: nameTable() });
    } catch (error) {
      c.error = (error as Error).message;
      answer({ error: c.error });
      socket.end();
    }
  };

  const listen = async (address: string) => {
    const known = servers.get(address);
    if (known) return known.path;
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      let buffer = '';
      let c: IstiodConnection | undefined;
      socket.setEncoding('utf8');
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        if (c) c.closedAt = new Date().toISOString();
      });
      socket.on('data', (chunk: string) => {
        if (c) return;
        buffer += chunk;
        const end = buffer.indexOf('\n');
        if (end < 0) {
          if (buffer.length > 1 << 20) socket.destroy();
          return;
        }
        c = { address, at: new Date().toISOString() };
        connections.push(c);
        void hello(socket, c, buffer.slice(0, end));
      });
    });
    const socketPath = p(`${address}.sock`);
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socketPath, resolve));
    servers.set(address, { server, sockets, path: socketPath });
    return socketPath;
  };

  const close = async (address: string) => {
    const s = servers.get(address);
    if (!s) return;
    servers.delete(address);
    const closed = new Promise<void>((resolve) => s.server.close(() => resolve()));
    for (const socket of s.sockets) socket.destroy();
    await closed;
  };

  for (const address of o.addresses) await listen(address);
  return {
    rootPem,
    connections,
    listen,
    close,
    stop: async () => {
      for (const timer of timers) clearTimeout(timer);
      await Promise.all([...servers.keys()].map(close));
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

interface HelloNode {
  namespace?: string;
  ips?: string[];
  metadata?: Record<string, string>;
  labels?: Record<string, string>;
  readinessProbe?: boolean;
}

interface Hello {
  token?: string;
  csr?: string;
  node?: HelloNode;
}
