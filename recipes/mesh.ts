// What the mesh-expansion recipes share: the workload's identity, the flow, the istiod-flow values resolved from the cluster (istioctl's), and the services to notify.
import { z } from 'zod';
import type { RecipeContext } from '../engine/recipe.ts';
import { envName, oneLine } from '../engine/validate.ts';
import { isLabelKey, isLabelValue, PATTERN, showValue } from '../engine/values.ts';
import type { Notifiable } from '../engine/resource.ts';
import { Service } from '../resources/service.ts';
import type { InjectorValues, MeshConfig, Probe, ProxyConfig, WorkloadGroup } from '../clients/istio-config.ts';
import { WORKLOAD_GROUPS } from '../clients/workload-group.ts';
import { cluster, type ClusterAttribute } from './cluster.ts';

/** A namespace name as Kubernetes accepts it (a DNS-1123 label). */
export const namespaceName = z.string().max(63).regex(PATTERN.dnsLabel, 'expected a Kubernetes namespace name: lower case letters, digits and "-", at most 63');
/** A service account name as Kubernetes accepts it (a DNS-1123 subdomain). */
export const serviceAccountName = z
  .string()
  .max(253)
  .regex(PATTERN.dnsSubdomain, 'expected a Kubernetes service account name: lower case letters, digits, "-" and "."');
/** A label value (a network name, a mesh ID): at most 63 letters, digits, "-", "_", "." beginning and ending with a letter or digit. */
const labelValue = z.string().max(63).regex(PATTERN.labelValue, 'expected a label value: letters, digits, "-", "_" and ".", at most 63');

export const flow = z.enum(['classic', 'istiod']).default('classic');

/** Who this VM is in the mesh (istioctl's WorkloadGroup): the workload's name, namespace and service account. */
export const workload = z.strictObject({
  /** The WorkloadGroup (and canonical service) name. */
  name: namespaceName,
  namespace: namespaceName,
  serviceAccount: serviceAccountName,
  /** Inbound ports the sidecar captures; none means all ("*"). */
  ports: z.array(z.number().int().min(1).max(65535)).default([]),
  /** The VM's network (ISTIO_META_NETWORK); by default the WorkloadGroup's, else the cluster's (injector values, system namespace label). */
  network: labelValue.optional(),
  labels: z
    .record(
      z.string().refine(isLabelKey, { error: (i) => `${showValue(i.input)} is not a label key ([prefix/]name: letters, digits, "-", "_", "."; at most 63)` }),
      z.string().refine(isLabelValue, { error: (i) => `${showValue(i.input)} is not a label value (letters, digits, "-", "_" and ".", at most 63)` }),
    )
    .default({}),
  /** Overrides: by default from the cluster (injector values' clusterName, the mesh config's defaultConfig.meshId and trustDomain). */
  clusterId: z.string().max(253).regex(PATTERN.clusterId, 'expected a cluster ID: letters, digits, "-", "_" and "."').optional(),
  meshId: labelValue.optional(),
  trustDomain: z.string().max(255).regex(PATTERN.trustDomain, 'expected a trust domain: letters, digits, ".", "-" and "_"').optional(),
  /** An istiod revision ("canary"); default none. */
  revision: z
    .string()
    .regex(/^[a-z0-9-]*$/)
    .default(''),
});
export type Workload = z.output<typeof workload>;

export const proxyUser = z.string().default('istio-proxy');

/** istiod: proxy metadata over the mesh config's (cluster-env and certs both take it: cluster.env and the mesh config get it). */
export const proxyMetadataAttribute = z.record(envName, oneLine).default({});

/** istiod[-rev].<ns>.svc, the name the sidecar dials (istioctl's IstiodHost). */
export function istiodHost(systemNamespace: string, revision: string): string {
  return `${revision && revision !== 'default' ? `istiod-${revision}` : 'istiod'}.${systemNamespace}.svc`;
}

/** dnsmasq as the dns recipe declares it: other recipes notify it when an input dnsmasq reads (e.g. /etc/hosts) changes. */
export const DNSMASQ_SERVICE = { name: 'dnsmasq', enabled: true, running: true, track: true } as const;

/** The sidecar's units: istio, and in the classic flow the node agent too. */
export function sidecarServiceSpecs(flowName: 'classic' | 'istiod') {
  return (flowName === 'classic' ? ['istio', 'istio-auth-node-agent'] : ['istio']).map((name) => ({ name, enabled: true, running: true }));
}

/**
 * The sidecar services, as targets for a changed input to notify: only when the runlist runs the sidecar-services recipe,
 * which declares them (last, so they start after their inputs exist).
 */
export function sidecarRestart(ctx: RecipeContext, flowName: 'classic' | 'istiod'): { notifies?: Notifiable[] } {
  if (!ctx.runlist.recipes.includes('sidecar-services')) return {};
  return { notifies: sidecarServiceSpecs(flowName).map((spec) => Service(spec)) };
}

const DNSMASQ_MANAGED = 'dns:dnsmasq-managed';

/**
 * For the dns recipe: call it when it declares `Service(DNSMASQ_SERVICE)` (it manages dnsmasq), so that recipes declared
 * after it (certs, for /etc/hosts) restart dnsmasq when a file dnsmasq reads changes. Built-in runlists put dns first.
 */
export function managesDnsmasq(ctx: RecipeContext): void {
  ctx.service(DNSMASQ_MANAGED, () => ({ managed: false })).managed = true;
}

/** dnsmasq as the target of a changed input it reads: only when the runlist's dns recipe (declared earlier) manages it. */
export function dnsmasqRestart(ctx: RecipeContext): { notifies?: Notifiable[] } {
  return ctx.service(DNSMASQ_MANAGED, () => ({ managed: false })).managed ? { notifies: [Service(DNSMASQ_SERVICE)] } : {};
}

/**
 * A VM's place in an Istio 1.8+ mesh, as `istioctl x workload entry configure` works it out: the cluster's mesh config,
 * the WorkloadGroup, the injector's cluster name and network; attributes override each value.
 */
export interface MeshMember {
  name: string;
  namespace: string;
  serviceAccount: string;
  systemNamespace: string;
  revision: string;
  /** The WorkloadGroup's labels (spec.metadata, then the template's), then the attribute's. */
  labels: Record<string, string>;
  /** Port name → number (ISTIO_INBOUND_PORTS, ISTIO_META_POD_PORTS). */
  ports: Record<string, number>;
  network: string;
  clusterId: string;
  trustDomain: string;
  /** The mesh config's defaultConfig with the WorkloadGroup's proxy.istio.io/config applied (istioctl's order). */
  proxyConfig: ProxyConfig & { proxyMetadata: Record<string, string> };
  /** The WorkloadGroup's probe: the mesh config's readinessProbe (istioctl replaces any the mesh config had). */
  probe?: Probe | undefined;
  /** Where each cluster-read value came from, for messages. */
  sources: { mesh: string; group?: string | undefined; injector?: string | undefined };
}

/** What the cluster said, read once per run (pure input to meshMember: the golden test gives istioctl's testdata). */
export interface MeshInputs {
  mesh: MeshConfig;
  group?: WorkloadGroup | undefined;
  injector?: InjectorValues | undefined;
  /** topology.istio.io/network of the system namespace. */
  namespaceNetwork?: string | undefined;
}

/** What the registration recipe will make the WorkloadGroup hold (it applies it later in the same run, so it is not read yet). */
export interface IntendedGroup {
  labels?: Record<string, string>;
  ports?: Record<string, number>;
  probe?: Probe;
}

const revisioned = (revision: string): boolean => revision !== '' && revision !== 'default';

/** Pure: a VM's mesh identity from what the cluster said and the attributes (overrides). */
export function meshMember(w: Workload, systemNamespace: string, inputs: MeshInputs, intended: IntendedGroup = {}): MeshMember {
  const { mesh, group, injector } = inputs;
  // istioctl: the mesh config's defaultConfig, discoveryAddress defaulted for a revision, then proxy.istio.io/config
  // (the object's annotation, then spec.metadata's) field by field, proxyMetadata merged key by key
  const { proxyMetadata: meshMetadata, ...meshDefaults } = mesh.defaultConfig;
  let proxyConfig: ProxyConfig = { ...meshDefaults };
  if (revisioned(w.revision) && !proxyConfig.discoveryAddress) proxyConfig.discoveryAddress = `${istiodHost(systemNamespace, w.revision)}:15012`;
  const metadata = { ...meshMetadata };
  for (const overrides of group?.proxyConfigs ?? []) {
    const { proxyMetadata, ...fields } = overrides;
    proxyConfig = { ...proxyConfig, ...fields };
    Object.assign(metadata, proxyMetadata);
  }
  delete proxyConfig.readinessProbe;
  const ports = intended.ports ?? (w.ports.length > 0 ? Object.fromEntries(w.ports.map((p) => [`port-${p}`, p])) : undefined) ?? group?.template.ports ?? {};
  // as istioctl: the injector's clusterName as it is ('' when the chart left it empty: istiod then takes the VM as its own cluster's)
  const clusterId = w.clusterId ?? injector?.clusterName;
  if (clusterId === undefined)
    throw new Error(
      `cannot learn the cluster ID: no ConfigMap ${systemNamespace}/istio-sidecar-injector${revisioned(w.revision) ? `-${w.revision}` : ''} (its values' global.multiCluster.clusterName); set workload.clusterId`,
    );
  const probe = intended.probe ?? group?.probe;
  return {
    name: w.name,
    namespace: w.namespace,
    serviceAccount: w.serviceAccount,
    systemNamespace,
    revision: w.revision,
    labels: { ...group?.labels, ...intended.labels, ...w.labels },
    ports,
    network: w.network ?? (group?.template.network || undefined) ?? (injector?.network || undefined) ?? inputs.namespaceNetwork ?? '',
    clusterId,
    trustDomain: w.trustDomain ?? mesh.trustDomain,
    proxyConfig: { ...proxyConfig, proxyMetadata: metadata, ...(w.meshId !== undefined ? { meshId: w.meshId } : {}) },
    ...(probe ? { probe } : {}),
    sources: { mesh: mesh.source, group: group?.source, injector: injector?.source },
  };
}

/** What the VM's files say beyond the mesh config (istioctl's flags). */
export interface MemberOptions {
  /** --capture-dns (default true): ISTIO_META_DNS_CAPTURE, the agent's DNS proxy on port 53. */
  dnsCapture: boolean;
  /** ISTIO_META_DNS_AUTO_ALLOCATE: addresses for ServiceEntries without one. */
  dnsAutoAllocate?: boolean;
  /** Registration's proxy metadata (ISTIO_META_AUTO_REGISTER_GROUP, ISTIO_META_WORKLOAD_ENTRY). */
  registration?: Record<string, string>;
}

/** The labels the sidecar reports: the workload's, with the canonical service labels (Istio's labels.CanonicalService). */
export function canonicalLabels(m: Pick<MeshMember, 'labels' | 'name'>): Record<string, string> {
  const first = (keys: string[]) => keys.map((k) => m.labels[k]).find((v) => v !== undefined && v !== '');
  return {
    ...m.labels,
    'service.istio.io/canonical-name': first(['service.istio.io/canonical-name', 'app.kubernetes.io/name', 'app']) ?? m.name,
    'service.istio.io/canonical-revision': first(['service.istio.io/canonical-revision', 'app.kubernetes.io/version', 'version']) ?? 'latest',
  };
}

/** JSON as Go's encoding/json writes a map[string]string: keys sorted as bytes, no spaces. */
function goJson(map: Record<string, string>): string {
  const entries = Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`;
}

/** The proxy metadata istioctl writes into both the mesh config and cluster.env (createMeshConfig's md). */
export function memberProxyMetadata(m: MeshMember, o: MemberOptions): Record<string, string> {
  const labels = canonicalLabels(m);
  const md: Record<string, string> = { ...m.proxyConfig.proxyMetadata };
  md.CANONICAL_SERVICE = labels['service.istio.io/canonical-name']!;
  md.CANONICAL_REVISION = labels['service.istio.io/canonical-revision']!;
  md.POD_NAMESPACE = m.namespace;
  md.SERVICE_ACCOUNT = m.serviceAccount;
  md.TRUST_DOMAIN = m.trustDomain;
  md.ISTIO_META_CLUSTER_ID = m.clusterId;
  md.ISTIO_META_MESH_ID = m.proxyConfig.meshId ?? '';
  md.ISTIO_META_NETWORK = m.network;
  const ports = Object.entries(m.ports).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  // model.PodPort as Go marshals a struct: its fields in declaration order (name, containerPort, protocol)
  if (ports.length > 0)
    md.ISTIO_META_POD_PORTS = `[${ports.map(([name, port]) => `{"name":${JSON.stringify(name)},"containerPort":${port},"protocol":""}`).join(',')}]`;
  md.ISTIO_META_WORKLOAD_NAME = m.name;
  md.ISTIO_METAJSON_LABELS = goJson(labels);
  if (o.dnsCapture) md.ISTIO_META_DNS_CAPTURE = 'true';
  if (o.dnsAutoAllocate) md.ISTIO_META_DNS_AUTO_ALLOCATE = 'true';
  Object.assign(md, o.registration);
  return md;
}

/** The VM's mesh config (/etc/istio/config/mesh, istioctl's mesh.yaml): { defaultConfig } with the metadata and the probe. */
export function memberProxyConfig(m: MeshMember, o: MemberOptions): Record<string, unknown> {
  return { ...m.proxyConfig, proxyMetadata: memberProxyMetadata(m, o), ...(m.probe ? { readinessProbe: m.probe } : {}) };
}

/** The ports the sidecar captures (ISTIO_INBOUND_PORTS): the workload's, in port-name order, or all. */
export function inboundPorts(m: Pick<MeshMember, 'ports'>): string {
  const ports = Object.entries(m.ports).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return ports.length ? ports.map(([, p]) => p).join(',') : '*';
}

/** The run's reads for the istiod flow, once whatever recipes ask: the mesh config, the WorkloadGroup, the injector's values, the network label. */
export async function readMeshInputs(
  ctx: RecipeContext,
  a: { workload: Workload; systemNamespace: string; cluster?: ClusterAttribute | undefined },
): Promise<MeshInputs> {
  const w = a.workload;
  const cp = { namespace: a.systemNamespace, revision: w.revision };
  const c = cluster(ctx, a.cluster, 'the mesh config (trust domain, proxy metadata)');
  const key = `${a.systemNamespace}:${w.revision}`;
  const istio = await import('../clients/istio-config.ts');
  // the mesh config, the injector's values and the network label change seldom: kept between runs (cluster.keepInputs);
  // the WorkloadGroup is this VM's own and is read every run
  const [mesh, group] = await Promise.all([
    c.kept(`mesh-config:${key}`, istio.meshConfigRead(cp)),
    // the same GET as the registration recipe's WorkloadGroup (Cluster.object), parsed here
    c.object(WORKLOAD_GROUPS, w.namespace, w.name).then((object) => object && istio.parseWorkloadGroup(object, w.namespace)),
  ]);
  // the cluster ID and network: read only when no attribute gives them
  const needNetwork = w.network === undefined && !group?.template.network;
  const injector = w.clusterId === undefined || needNetwork ? await c.kept(`injector:${key}`, istio.injectorValuesRead(cp)) : undefined;
  const namespaceNetwork =
    needNetwork && !injector?.network
      ? await c.kept(`namespace-network:${a.systemNamespace}`, istio.namespaceNetworkRead(a.systemNamespace)).catch((error: Error) => {
          throw new Error(`${error.message}; or set workload.network (the VM's network, "" for a single-network mesh)`, { cause: error });
        })
      : undefined;
  return { mesh, group, injector, namespaceNetwork };
}

/**
 * The member this run's istiod-flow recipes share (cluster-env and certs alike): the cluster read once, the attributes
 * (and what the registration recipe will write into the WorkloadGroup) over it.
 */
export function resolveMember(
  ctx: RecipeContext,
  a: { workload: Workload; systemNamespace: string; cluster?: ClusterAttribute | undefined },
  intended: IntendedGroup = {},
): Promise<MeshMember> {
  const key = `mesh-member:${JSON.stringify([a.workload, a.systemNamespace, a.cluster ?? null, intended])}`;
  return ctx.service(key, async () => meshMember(a.workload, a.systemNamespace, await readMeshInputs(ctx, a), intended));
}
