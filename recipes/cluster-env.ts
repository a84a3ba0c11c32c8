// Recipe cluster-env: /var/lib/istio/envoy/cluster.env, what the sidecar knows of the cluster it joins.
import { z } from 'zod';
import { defineRecipe, type RecipeContext } from '../engine/recipe.ts';
import { cidr, envName, ipAddress, oneLine } from '../engine/validate.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { renderEnvFile, renderIstioctlEnv } from './env-file.ts';
import { clusterAttribute, cluster } from './cluster.ts';
import {
  flow,
  inboundPorts,
  istiodHost,
  memberProxyMetadata,
  namespaceName,
  proxyMetadataAttribute,
  proxyUser,
  resolveMember,
  sidecarRestart,
  workload,
  type MemberOptions,
  type MeshMember,
} from './mesh.ts';
import { primaryAddress } from '../resources/workload-entry.ts';
import { registrationAttribute, registrationProxyMetadata, resolveMode, type Registration } from './registration.ts';
import { removeOwnFiles } from './undo.ts';

export const ENVOY_DIR = '/var/lib/istio/envoy';
const CLUSTER_ENV = `${ENVOY_DIR}/cluster.env`;

export const clusterEnv = defineRecipe({
  name: 'cluster-env',
  description: 'cluster.env: classic (setupMeshEx.sh generateClusterEnv) or istiod (istioctl x workload entry configure, from the cluster).',
  attributes: z.strictObject({
    flow,
    /** Classic: the service range(s) the sidecar intercepts; read from the cluster when not given. */
    serviceCidr: z.union([cidr, z.array(cidr).min(1)]).optional(),
    /** Classic: used when the cluster cannot tell (no ServiceCIDR API, no permission for the dry-run probe). */
    fallbackServiceCidr: z.array(cidr).optional(),
    systemNamespace: namespaceName.default('istio-system'),
    /** Classic: ISTIO_CP_AUTH; the sidecar's default (MUTUAL_TLS) when not given. */
    controlPlaneAuth: z.enum(['MUTUAL_TLS', 'NONE']).optional(),
    /** istiod: the workload this VM is (required for the istiod flow); its values override the cluster's. */
    workload: workload.optional(),
    /** istiod: the VM's address in the mesh (ISTIO_SVC_IP; istioctl --internalIP). */
    svcIp: ipAddress.optional(),
    /** istiod: an address outside the VM (istioctl --externalIP): ISTIO_SVC_IP and REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION. */
    externalIp: ipAddress.optional(),
    /** istiod: the agent answers DNS on port 53 (ISTIO_META_DNS_CAPTURE; istioctl --capture-dns, default on). */
    dnsCapture: z.boolean().default(true),
    /** istiod: the DNS proxy gives ServiceEntries without an address one (ISTIO_META_DNS_AUTO_ALLOCATE). */
    dnsAutoAllocate: z.boolean().default(false),
    /** istiod: how the VM is registered (the registration recipe's attribute): auto sets ISTIO_META_AUTO_REGISTER_GROUP. */
    registration: registrationAttribute.optional(),
    /** istiod: proxy metadata over the mesh config's (the certs recipe takes it too: both files get it). */
    proxyMetadata: proxyMetadataAttribute,
    /** Further KEY: value lines, over everything else. */
    extra: z.record(envName, oneLine).default({}),
    proxyUser,
    cluster: clusterAttribute.optional(),
  }),
  async declare(a, ctx) {
    let content: string;
    if (a.flow === 'istiod') {
      if (!a.workload) throw new Error('the istiod flow needs the "workload" attribute (name, namespace, serviceAccount)');
      if (a.svcIp && a.externalIp)
        throw new Error('svcIp and externalIp both set: give the VM one address (istioctl: --internalIP and --externalIP are mutually exclusive)');
      const { member, options } = await memberOf(ctx, { ...a, workload: a.workload });
      content = renderIstiodClusterEnv(member, options, { svcIp: a.svcIp, externalIp: a.externalIp, extra: a.extra });
    } else {
      const cidrs = a.serviceCidr
        ? [a.serviceCidr].flat()
        : (
            await cluster(ctx, a.cluster, 'cluster-env.serviceCidr').kept(
              `service-cidrs:${JSON.stringify(a.fallbackServiceCidr ?? null)}`,
              (await import('../clients/kubernetes.ts')).serviceCidrsRead({ ...(a.fallbackServiceCidr && { fallback: a.fallbackServiceCidr }) }),
            )
          ).cidrs;
      // only what differs from the sidecar's own defaults, as in the docs' example (ISTIO_SERVICE_CIDR=10.63.240.0/20)
      content = renderEnvFile(
        {
          ISTIO_SERVICE_CIDR: cidrs.join(','),
          ISTIO_SYSTEM_NAMESPACE: a.systemNamespace === 'istio-system' ? undefined : a.systemNamespace,
          ISTIO_CP_AUTH: a.controlPlaneAuth,
          ...Object.fromEntries(Object.entries(a.extra).sort(([x], [y]) => x.localeCompare(y))),
        },
        { file: CLUSTER_ENV },
      );
    }
    return [
      Directory({ path: ENVOY_DIR, mode: 0o755, owner: a.proxyUser, group: a.proxyUser }),
      File({ path: CLUSTER_ENV, mode: 0o644, owner: a.proxyUser, group: a.proxyUser, content, track: true }, sidecarRestart(ctx, a.flow)),
    ];
  },
  /** cluster.env, when it holds what meshvm wrote; with --purge the directory too, when nothing else is left in it. */
  undo: async (_a, ctx) => [...(await removeOwnFiles(ctx, [CLUSTER_ENV])), ctx.purge && Directory({ path: ENVOY_DIR, ensure: 'absent' })],
});

/** The member and the flags of the istiod flow, as cluster-env and certs both work them out (the cluster read once). */
export async function memberOf(
  ctx: RecipeContext,
  a: Parameters<typeof resolveMember>[1] & {
    flow: 'classic' | 'istiod';
    dnsCapture: boolean;
    dnsAutoAllocate: boolean;
    registration?: Registration | undefined;
    proxyMetadata?: Record<string, string>;
  },
): Promise<{ member: MeshMember; options: MemberOptions }> {
  const r = a.registration;
  const mode = resolveMode(a);
  // auto: the WorkloadGroup the registration recipe applies later in this run holds these (so the next run reads them)
  const intended =
    mode === 'auto' && r?.ensure !== 'absent'
      ? { ...(r?.labels && { labels: r.labels }), ...(r?.ports && { ports: r.ports }), ...(r?.probe && { probe: r.probe }) }
      : {};
  const resolved = await resolveMember(ctx, a, intended);
  // the attribute's metadata over the cluster's, under istioctl's own keys
  const member = { ...resolved, proxyConfig: { ...resolved.proxyConfig, proxyMetadata: { ...resolved.proxyConfig.proxyMetadata, ...a.proxyMetadata } } };
  // manual with neither an entry name nor an address: the address the registration recipe reads too (the default route)
  let address: string | undefined;
  if (mode === 'manual' && r?.ensure !== 'absent' && !r?.entryName && !r?.address) {
    const family = r?.family === 'ipv6' ? 6 : r?.family === 'ipv4' ? 4 : undefined;
    address = (await primaryAddress(ctx.host, family)).address;
  }
  const registration = registrationProxyMetadata({ ...a, address });
  // auto-registration into a group nobody makes: istiod would refuse the sidecar's connection
  if (registration.ISTIO_META_AUTO_REGISTER_GROUP && !ctx.runlist.recipes.includes('registration') && !resolved.sources.group)
    throw new Error(
      `registration auto (the istiod flow's default) needs the WorkloadGroup ${a.workload.namespace}/${a.workload.name}, which the cluster does not have and no registration recipe in this runlist makes: add the registration recipe, create the WorkloadGroup, or set registration: none`,
    );
  return { member, options: { dnsCapture: a.dnsCapture, dnsAutoAllocate: a.dnsAutoAllocate, registration } };
}

/**
 * cluster.env as `istioctl x workload entry configure` writes it (createClusterEnv): the proxy metadata of the mesh config,
 * then the workload's overrides, sorted, quoted as istioctl quotes.
 */
export function renderIstiodClusterEnv(
  m: MeshMember,
  o: MemberOptions,
  flags: { svcIp?: string | undefined; externalIp?: string | undefined; extra?: Record<string, string> } = {},
): string {
  // 22 ssh, 15090 prometheus, 15021 the agent's health; the status port unless it is one of those (15020 by default)
  const statusPort = m.proxyConfig.statusPort;
  const exclude = `22,15090,15021${statusPort === 15090 || statusPort === 15021 ? '' : `,${statusPort ?? 15020}`}`;
  const overrides: Record<string, string> = {
    ISTIO_INBOUND_PORTS: inboundPorts(m),
    ISTIO_NAMESPACE: m.namespace,
    ISTIO_SERVICE: `${m.name}.${m.namespace}`,
    ISTIO_SERVICE_CIDR: '*',
    ISTIO_LOCAL_EXCLUDE_PORTS: exclude,
    SERVICE_ACCOUNT: m.serviceAccount,
  };
  if (m.revision && m.revision !== 'default') overrides.CA_ADDR = `${istiodHost(m.systemNamespace, m.revision)}:15012`;
  if (flags.svcIp) overrides.ISTIO_SVC_IP = flags.svcIp;
  else if (flags.externalIp) {
    overrides.ISTIO_SVC_IP = flags.externalIp;
    overrides.REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION = 'true';
  }
  return renderIstioctlEnv({ ...memberProxyMetadata(m, o), ...overrides, ...flags.extra }, CLUSTER_ENV);
}
