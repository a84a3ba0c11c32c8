// Recipe cluster-env: /var/lib/istio/envoy/cluster.env, what the sidecar knows of the cluster it joins.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { cidr } from '../engine/validate.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { renderEnvFile } from './env-file.ts';
import { clusterAttribute, cluster } from './cluster.ts';
import { flow, istiodHost, namespaceName, proxyUser, sidecarRestart, workload, type Workload } from './mesh.ts';

export const ENVOY_DIR = '/var/lib/istio/envoy';
const envName = z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'expected an environment variable name');

export const clusterEnv = defineRecipe({
  name: 'cluster-env',
  description: 'cluster.env: classic (setupMeshEx.sh generateClusterEnv) or istiod (istioctl x workload entry configure).',
  attributes: z.strictObject({
    flow,
    /** Classic: the service range(s) the sidecar intercepts; read from the cluster when not given. */
    serviceCidr: z.union([cidr, z.array(cidr).min(1)]).optional(),
    /** Classic: used when the cluster cannot tell (no ServiceCIDR API, no permission for the dry-run probe). */
    fallbackServiceCidr: z.array(cidr).optional(),
    systemNamespace: namespaceName.default('istio-system'),
    /** Classic: ISTIO_CP_AUTH; the sidecar's default (MUTUAL_TLS) when not given. */
    controlPlaneAuth: z.enum(['MUTUAL_TLS', 'NONE']).optional(),
    /** istiod: the workload this VM is (required for the istiod flow). */
    workload: workload.optional(),
    /** istiod: the VM's address in the mesh (ISTIO_SVC_IP). */
    svcIp: z.string().optional(),
    /** istiod: proxyMetadata of the mesh config, written first and overridden by the workload's own settings. */
    proxyMetadata: z.record(envName, z.string()).default({}),
    /** Further KEY: value lines. */
    extra: z.record(envName, z.string()).default({}),
    proxyUser,
    cluster: clusterAttribute.optional(),
  }),
  async declare(a, ctx) {
    let content: string;
    if (a.flow === 'istiod') {
      if (!a.workload) throw new Error('the istiod flow needs the "workload" attribute (name, namespace, serviceAccount)');
      content = renderIstiodClusterEnv(a.workload, { systemNamespace: a.systemNamespace, svcIp: a.svcIp, proxyMetadata: a.proxyMetadata, extra: a.extra });
    } else {
      const cidrs = a.serviceCidr
        ? [a.serviceCidr].flat()
        : (
            await cluster(ctx, a.cluster, 'cluster-env.serviceCidr').once('service-cidrs', (k) =>
              k.serviceCidrs({ ...(a.fallbackServiceCidr && { fallback: a.fallbackServiceCidr }) }),
            )
          ).cidrs;
      // only what differs from the sidecar's own defaults, as in the docs' example (ISTIO_SERVICE_CIDR=10.63.240.0/20)
      content = renderEnvFile({
        ISTIO_SERVICE_CIDR: cidrs.join(','),
        ISTIO_SYSTEM_NAMESPACE: a.systemNamespace === 'istio-system' ? undefined : a.systemNamespace,
        ISTIO_CP_AUTH: a.controlPlaneAuth,
        ...Object.fromEntries(Object.entries(a.extra).sort(([x], [y]) => x.localeCompare(y))),
      });
    }
    return [
      Directory({ path: ENVOY_DIR, mode: 0o755, owner: a.proxyUser, group: a.proxyUser }),
      File({ path: `${ENVOY_DIR}/cluster.env`, mode: 0o644, owner: a.proxyUser, group: a.proxyUser, content }, sidecarRestart(ctx, a.flow)),
    ];
  },
});

/** cluster.env as `istioctl x workload entry configure` writes it: proxyMetadata, then the workload's overrides, sorted, shell-quoted. */
export function renderIstiodClusterEnv(
  w: Workload,
  o: { systemNamespace: string; svcIp?: string | undefined; proxyMetadata?: Record<string, string>; extra?: Record<string, string> },
): string {
  const overrides: Record<string, string> = {
    ISTIO_INBOUND_PORTS: w.ports.length ? w.ports.join(',') : '*',
    ISTIO_NAMESPACE: w.namespace,
    ISTIO_SERVICE: `${w.name}.${w.namespace}`,
    ISTIO_SERVICE_CIDR: '*',
    ISTIO_LOCAL_EXCLUDE_PORTS: '22,15090,15021,15020',
    SERVICE_ACCOUNT: w.serviceAccount,
  };
  if (w.revision && w.revision !== 'default') overrides.CA_ADDR = `${istiodHost(o.systemNamespace, w.revision)}:15012`;
  if (o.svcIp) overrides.ISTIO_SVC_IP = o.svcIp;
  return renderEnvFile({ ...o.proxyMetadata, ...overrides, ...o.extra }, { sorted: true });
}
