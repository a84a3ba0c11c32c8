// Recipe certs: classic /etc/certs from the istio.<sa> Secret (or files); istiod the root cert, the istio-token, the mesh config, the hosts entry.
import fs from 'node:fs/promises';
import path from 'node:path';
import { isIP } from 'node:net';
import { z } from 'zod';
import { defineRecipe, type RecipeContext } from '../engine/recipe.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { ManagedBlock } from '../resources/managed-block.ts';
import { clusterAttribute, cluster } from './cluster.ts';
import { flow, istiodHost, namespaceName, proxyUser, serviceAccountName, sidecarRestart, workload, type Workload } from './mesh.ts';
import { discoverControlPlane, dnsAttributes } from './dns.ts';
import { IstioToken, jwtClaims } from '../resources/istio-token.ts';
import { certsChecks } from './checks/certs.ts';

export { jwtClaims };

export const TOKEN_PATH = '/var/run/secrets/tokens/istio-token';
export const MESH_CONFIG = '/etc/istio/config/mesh';

const fromFiles = z.strictObject({
  from: z.literal('files'),
  /** Paths relative to the runlist (or absolute), read on the machine meshvm runs on. */
  rootCert: z.string(),
  certChain: z.string().optional(),
  key: z.string().optional(),
});

export const certs = defineRecipe({
  name: 'certs',
  description: 'Certificates and the workload token where the sidecar reads them, owned by istio-proxy, keys and tokens readable by it alone.',
  attributes: z.strictObject({
    flow,
    /** Classic: the cluster's istio.<serviceAccount> Secret, or PEM files. */
    source: z.union([z.strictObject({ from: z.literal('cluster') }), fromFiles]).default({ from: 'cluster' }),
    /** Classic: where the istio.<serviceAccount> Secret lives. */
    namespace: namespaceName.optional(),
    serviceAccount: serviceAccountName.optional(),
    /** istiod: the workload this VM is. */
    workload: workload.optional(),
    systemNamespace: namespaceName.default('istio-system'),
    dir: z.string().default('/etc/certs'),
    /** istiod: how long a minted istio-token lives, and how long before its expiry the next converge re-mints it. */
    tokenSeconds: z.number().int().min(600, 'a TokenRequest must ask for at least 600 seconds').default(43_200),
    renewBeforeSeconds: z.number().int().min(0).default(21_600),
    /** istiod: the address of istiod for /etc/hosts; by default the east-west gateway's LoadBalancer IP. */
    istiodAddress: z.string().optional(),
    proxyMetadata: z.record(z.string(), z.string()).default({}),
    proxyUser,
    cluster: clusterAttribute.optional(),
  }),
  checks: certsChecks,
  async declare(a, ctx) {
    const owner = { owner: a.proxyUser, group: a.proxyUser };
    const restart = sidecarRestart(ctx, a.flow);
    const dir = Directory({ path: a.dir, mode: 0o755, ...owner });
    if (a.flow === 'classic') {
      const pems = a.source.from === 'files' ? await readPemFiles(a.source, ctx) : await clusterPems(ctx, a);
      return [
        dir,
        File({ path: `${a.dir}/root-cert.pem`, mode: 0o644, ...owner, content: pems.rootCert }, restart),
        pems.certChain !== undefined && File({ path: `${a.dir}/cert-chain.pem`, mode: 0o644, ...owner, content: pems.certChain }, restart),
        pems.key !== undefined && File({ path: `${a.dir}/key.pem`, mode: 0o600, ...owner, sensitive: true, content: pems.key }, restart),
      ];
    }
    if (!a.workload) throw new Error('the istiod flow needs the "workload" attribute (name, namespace, serviceAccount)');
    const w = a.workload;
    const k = cluster(ctx, a.cluster, 'the istiod root certificate');
    const rootCert = await k.once(`root-cert:${w.namespace}`, (c) => c.rootCert(w.namespace));
    const istiod = a.istiodAddress ?? (await discoverIstiod(ctx, a));
    return [
      dir,
      File({ path: `${a.dir}/root-cert.pem`, mode: 0o644, ...owner, content: rootCert }, restart),
      Directory({ path: '/var/run/secrets', mode: 0o755, ...owner }),
      Directory({ path: path.dirname(TOKEN_PATH), mode: 0o755, ...owner }),
      IstioToken(
        {
          path: TOKEN_PATH,
          namespace: w.namespace,
          serviceAccount: w.serviceAccount,
          expirationSeconds: a.tokenSeconds,
          renewBeforeSeconds: a.renewBeforeSeconds,
          mode: 0o600,
          ...owner,
          mint: (request) =>
            cluster(ctx, a.cluster, 'the istio-token').once(`token:${request.namespace}/${request.serviceAccount}`, (k) => k.requestToken(request)),
        },
        restart,
      ),
      Directory({ path: '/etc/istio/config', mode: 0o755, ...owner }),
      Directory({ path: '/etc/istio/proxy', mode: 0o755, ...owner }),
      File({ path: MESH_CONFIG, mode: 0o644, ...owner, content: renderMeshConfig(w, a.systemNamespace, a.proxyMetadata) }, restart),
      isIP(istiod) !== 0 && ManagedBlock({ path: '/etc/hosts', name: 'istiod', lines: [`${istiod} ${istiodHost(a.systemNamespace, w.revision)}`] }, restart),
    ];
  },
});

async function readPemFiles(source: z.output<typeof fromFiles>, ctx: RecipeContext) {
  const read = async (file: string, what: string) => {
    const full = path.resolve(ctx.runlist.dir, file);
    const text = await fs.readFile(full, 'utf8').catch((error: NodeJS.ErrnoException) => {
      throw new Error(`cannot read the ${what} ${full}: ${error.code ?? error.message}`);
    });
    if (!text.includes('-----BEGIN ')) throw new Error(`${full} is not PEM (no -----BEGIN line)`);
    return text;
  };
  const key = source.key === undefined ? undefined : await read(source.key, 'private key');
  if (key !== undefined) (await import('../engine/secrets.ts')).secrets.add(key);
  return {
    rootCert: await read(source.rootCert, 'root certificate'),
    certChain: source.certChain === undefined ? undefined : await read(source.certChain, 'certificate chain'),
    key,
  };
}

async function clusterPems(
  ctx: RecipeContext,
  a: { namespace?: string | undefined; serviceAccount?: string | undefined; cluster?: z.output<typeof clusterAttribute> | undefined },
) {
  if (!a.namespace || !a.serviceAccount) throw new Error('the classic flow reads the istio.<serviceAccount> Secret: set "namespace" and "serviceAccount"');
  const { namespace, serviceAccount } = a;
  return cluster(ctx, a.cluster, 'the certificates').once(`istio-secret:${namespace}/${serviceAccount}`, (k) => k.istioSecret(namespace, serviceAccount));
}

async function discoverIstiod(ctx: RecipeContext, a: { systemNamespace: string; cluster?: z.output<typeof clusterAttribute> | undefined }): Promise<string> {
  const [entry] = await discoverControlPlane(ctx, dnsAttributes.parse({ flow: 'istiod', systemNamespace: a.systemNamespace, cluster: a.cluster }));
  return entry!.address;
}

/** /etc/istio/config/mesh as istioctl writes mesh.yaml: the proxy config's metadata for this workload. */
export function renderMeshConfig(w: Workload, systemNamespace: string, extra: Record<string, string>): string {
  const labels = {
    ...w.labels,
    'service.istio.io/canonical-name': w.labels.app ?? w.name,
    'service.istio.io/canonical-revision': w.labels.version ?? 'latest',
  };
  const metadata: Record<string, string> = {
    ...extra,
    CANONICAL_REVISION: labels['service.istio.io/canonical-revision'],
    CANONICAL_SERVICE: labels['service.istio.io/canonical-name'],
    ISTIO_META_CLUSTER_ID: w.clusterId,
    ISTIO_META_DNS_CAPTURE: 'true',
    ISTIO_META_MESH_ID: w.meshId,
    ISTIO_META_NETWORK: w.network,
    ISTIO_META_WORKLOAD_NAME: w.name,
    ISTIO_METAJSON_LABELS: JSON.stringify(Object.fromEntries(Object.entries(labels).sort())),
    POD_NAMESPACE: w.namespace,
    SERVICE_ACCOUNT: w.serviceAccount,
    TRUST_DOMAIN: w.trustDomain,
  };
  const lines = ['defaultConfig:', `  discoveryAddress: ${istiodHost(systemNamespace, w.revision)}:15012`, '  proxyMetadata:'];
  for (const [key, value] of Object.entries(metadata).sort(([x], [y]) => x.localeCompare(y))) lines.push(`    ${key}: ${JSON.stringify(value)}`);
  return lines.join('\n') + '\n';
}
