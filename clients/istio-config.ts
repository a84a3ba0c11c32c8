// What the cluster says of its mesh, read and typed before use: the mesh config, the injector's values, the system namespace's network, a WorkloadGroup, istiod's version.
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { isDnsSubdomain, PATTERN } from '../engine/values.ts';
import type { KeptRead } from './kept-inputs.ts';
import type { KubernetesClient } from './kubernetes.ts';
import { KubernetesError } from './kubernetes-errors.ts';
import { readObject, WORKLOAD_GROUPS } from './workload-group.ts';
import {
  CONTROL,
  ClusterValueError,
  dnsName,
  envName,
  hostPort,
  ipAddress,
  istioVersion,
  labelKey,
  labelValue,
  oneLine,
  parseClusterValue,
  port,
  refineOneLine,
  showValue,
} from './cluster-values.ts';

/** Which control plane: its namespace (istio-system) and revision ('' or "default" for none). */
export interface ControlPlane {
  namespace: string;
  revision?: string | undefined;
}

const revisioned = (revision: string | undefined): boolean => Boolean(revision) && revision !== 'default';
const suffix = (revision: string | undefined): string => (revisioned(revision) ? `-${revision}` : '');

/** The ConfigMap holding the mesh config: istio[-<rev>] (istioctl's createMeshConfig). */
export const meshConfigMapName = (revision?: string): string => `istio${suffix(revision)}`;
/** The injector's ConfigMap: istio-sidecar-injector[-<rev>] (istioctl's extractClusterIDFromInjectionConfig). */
export const injectorConfigMapName = (revision?: string): string => `istio-sidecar-injector${suffix(revision)}`;
/** The istiod Deployment: istiod[-<rev>]. */
export const istiodDeploymentName = (revision?: string): string => `istiod${suffix(revision)}`;
/** The label on the system namespace naming the cluster's network (multi-network meshes). */
export const NETWORK_LABEL = 'topology.istio.io/network';
/** The annotation with ProxyConfig overrides, on a WorkloadGroup or in its spec.metadata (as on a pod). */
export const PROXY_CONFIG_ANNOTATION = 'proxy.istio.io/config';

const nonNegative = z.number({ error: 'a number' }).int('a whole number').min(0, 'a number ≥ 0');
const hostOrIp = z.string({ error: 'a host' }).refine((v) => ipAddress.safeParse(v).success || dnsName.safeParse(v).success, 'a DNS name or an IP address');

/** A readiness probe as Istio's ReadinessProbe (WorkloadGroup.spec.probe, ProxyConfig.readinessProbe). */
export const probe = z.object({
  initialDelaySeconds: nonNegative.optional(),
  timeoutSeconds: nonNegative.optional(),
  periodSeconds: nonNegative.optional(),
  successThreshold: nonNegative.optional(),
  failureThreshold: nonNegative.optional(),
  httpGet: z
    .object({
      path: oneLine.optional(),
      port,
      host: hostOrIp.optional(),
      scheme: z.enum(['HTTP', 'HTTPS'], { error: 'HTTP or HTTPS' }).optional(),
      httpHeaders: z
        .array(
          z.object({
            name: z.string({ error: 'a header name' }).regex(/^[-_A-Za-z0-9]+$/, 'a header name (letters, digits, "-", "_")'),
            value: oneLine,
          }),
        )
        .optional(),
    })
    .optional(),
  tcpSocket: z.object({ host: hostOrIp.optional(), port }).optional(),
  exec: z.object({ command: z.array(oneLine).min(1, 'a command') }).optional(),
  grpc: z.object({ port, service: oneLine.optional() }).optional(),
});
export type Probe = z.output<typeof probe>;

/**
 * ProxyConfig as a mesh config's defaultConfig (or a proxy.istio.io/config annotation) gives it: the fields meshvm uses
 * typed, the others kept as they are (istioctl carries them into the VM's mesh config), every string one line.
 */
export const proxyConfig = z
  .looseObject({
    proxyMetadata: z
      .record(envName, z.string({ error: 'a string (proxyMetadata values are strings: quote it)' }).pipe(oneLine), { error: 'a map of strings' })
      .optional(),
    meshId: labelValue.optional(),
    discoveryAddress: hostPort.optional(),
    statusPort: port.optional(),
    readinessProbe: probe.optional(),
  })
  .superRefine(refineOneLine);
export type ProxyConfig = {
  proxyMetadata?: Record<string, string>;
  meshId?: string;
  discoveryAddress?: string;
  statusPort?: number;
  readinessProbe?: Probe;
} & Record<string, unknown>;

/** A SPIFFE trust domain: letters, digits, ".", "-", "_" (empty when the mesh config sets none, as istioctl then writes). */
const trustDomain = z
  .string({ error: 'a trust domain' })
  .refine((v) => v.length <= 255 && PATTERN.trustDomain.test(v), 'a trust domain (letters, digits, ".", "-", "_")');

const meshConfigSchema = z.looseObject({ trustDomain: trustDomain.optional(), defaultConfig: z.unknown().optional() }, { error: 'a YAML map' });

/** The mesh config a VM needs (the `mesh` key of ConfigMap istio[-<rev>]). */
export interface MeshConfig {
  /** "ConfigMap istio-system/istio", for messages. */
  source: string;
  /** trustDomain, '' when the ConfigMap sets none (istioctl writes TRUST_DOMAIN from it as is). */
  trustDomain: string;
  /** defaultConfig: ProxyConfig, proxyMetadata always present. */
  defaultConfig: ProxyConfig & { proxyMetadata: Record<string, string> };
}

/** Parses the `mesh` key's YAML text (pure: the golden test feeds istioctl's testdata through it). */
export function parseMeshConfig(text: string, source: string): MeshConfig {
  let tree: unknown;
  try {
    tree = text.trim() === '' ? {} : parseYaml(text);
  } catch (error) {
    throw new ClusterValueError(source, 'data.mesh', text, `YAML (${(error as Error).message.split('\n')[0]})`);
  }
  const mesh = parseClusterValue(meshConfigSchema, tree ?? {}, source, 'mesh');
  const defaultConfig = parseProxyConfig(mesh.defaultConfig ?? {}, source, 'mesh.defaultConfig');
  return { source, trustDomain: mesh.trustDomain ?? '', defaultConfig: { ...defaultConfig, proxyMetadata: defaultConfig.proxyMetadata ?? {} } };
}

/** A ProxyConfig tree (a mesh config's defaultConfig, an annotation's YAML), checked field by field. */
export function parseProxyConfig(tree: unknown, object: string, field: string): ProxyConfig {
  return parseClusterValue(proxyConfig, tree, object, field) as ProxyConfig;
}

/** The injector's values that a VM's identity depends on (istio-sidecar-injector[-<rev>], key `values`, JSON). */
export interface InjectorValues {
  source: string;
  /** global.multiCluster.clusterName: '' when the chart left it empty (istioctl then writes ISTIO_META_CLUSTER_ID=''). */
  clusterName: string;
  /** global.network: the cluster's network, '' for a single-network mesh. */
  network: string;
  /** global.meshID. */
  meshId: string;
}

/** A cluster ID as Istio takes it (--clusterID, global.multiCluster.clusterName). */
const clusterId = z
  .string({ error: 'a cluster ID' })
  .refine((v) => v === '' || (v.length <= 253 && PATTERN.clusterId.test(v)), 'a cluster ID (letters, digits, "-", "_", ".")');
const injectorSchema = z.looseObject(
  {
    global: z
      .looseObject(
        {
          multiCluster: z.looseObject({ clusterName: clusterId.optional() }, { error: 'a map' }).optional(),
          network: labelValue.optional(),
          meshID: labelValue.optional(),
        },
        { error: 'a map' },
      )
      .optional(),
  },
  { error: 'a JSON object' },
);

/** Parses the `values` key's JSON text. */
export function parseInjectorValues(text: string, source: string): InjectorValues {
  let tree: unknown;
  try {
    tree = JSON.parse(text);
  } catch (error) {
    throw new ClusterValueError(source, 'data.values', text, `JSON (${(error as Error).message})`);
  }
  const values = parseClusterValue(injectorSchema, tree, source, 'values');
  return {
    source,
    clusterName: values.global?.multiCluster?.clusterName ?? '',
    network: values.global?.network ?? '',
    meshId: values.global?.meshID ?? '',
  };
}

const labels = z.record(labelKey, labelValue, { error: 'a map of labels' });
const annotations = z.record(labelKey, z.string({ error: 'a string' }), { error: 'a map of annotations' });
const portName = z.string().refine((v) => v.length <= 63 && /^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$/.test(v), 'a port name (letters, digits and "-")');
const serviceAccount = z
  .string({ error: 'a service account name' })
  .refine((v) => v === '' || isDnsSubdomain(v), 'a service account name (lower case letters, digits, "-" and ".")');
const locality = z
  .string({ error: 'a locality' })
  .refine((v) => /^([A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+){0,2})?$/.test(v), 'a locality (region[/zone[/subzone]])');
const workloadAddress = z
  .string({ error: 'an address' })
  .refine(
    (v) => v === '' || ipAddress.safeParse(v).success || dnsName.safeParse(v).success || /^unix:\/\/[/@][^\s]*$/.test(v),
    'an IP address, a DNS name or unix://path',
  );

const workloadGroupSchema = z.object({
  metadata: z.object({
    name: z.string({ error: 'a name' }),
    namespace: z.string({ error: 'a namespace' }),
    annotations: annotations.optional(),
  }),
  spec: z.object(
    {
      metadata: z.object({ labels: labels.optional(), annotations: annotations.optional() }).optional(),
      template: z
        .object({
          address: workloadAddress.optional(),
          labels: labels.optional(),
          ports: z.record(portName, port, { error: 'a map of port names to numbers' }).optional(),
          serviceAccount: serviceAccount.optional(),
          network: labelValue.optional(),
          locality: locality.optional(),
          weight: nonNegative.optional(),
        })
        .optional(),
      probe: probe.optional(),
    },
    { error: 'a map' },
  ),
});

/** A WorkloadGroup as a VM's files need it (istioctl reads the same fields). */
export interface WorkloadGroup {
  /** "WorkloadGroup bookinfo/reviews", for messages. */
  source: string;
  namespace: string;
  name: string;
  /** spec.metadata.labels, then spec.template.labels over them (istioctl: template labels override). */
  labels: Record<string, string>;
  /** ProxyConfig overrides from proxy.istio.io/config: the object's annotation, then spec.metadata's (istioctl's order). */
  proxyConfigs: ProxyConfig[];
  template: {
    serviceAccount: string;
    network: string;
    ports: Record<string, number>;
    address?: string;
    locality?: string;
    weight?: number;
  };
  probe?: Probe;
}

/** Parses a WorkloadGroup as the API serves it (or as a file holds it, istioctl -f). */
export function parseWorkloadGroup(object: unknown, fallbackNamespace?: string): WorkloadGroup {
  const m = (object as { metadata?: { name?: unknown; namespace?: unknown } } | undefined)?.metadata;
  const source = `WorkloadGroup ${String(m?.namespace ?? fallbackNamespace ?? '')}/${String(m?.name ?? '')}`;
  const withNamespace =
    m && m.namespace === undefined && fallbackNamespace ? { ...(object as object), metadata: { ...m, namespace: fallbackNamespace } } : object;
  const wg = parseClusterValue(workloadGroupSchema, withNamespace, source);
  const proxyConfigs: ProxyConfig[] = [];
  const sources: [Record<string, string> | undefined, string][] = [
    [wg.metadata.annotations, 'metadata.annotations'],
    [wg.spec.metadata?.annotations, 'spec.metadata.annotations'],
  ];
  for (const [where, field] of sources) {
    const text = where?.[PROXY_CONFIG_ANNOTATION];
    if (text === undefined) continue;
    const at = `${field}."${PROXY_CONFIG_ANNOTATION}"`;
    let tree: unknown;
    try {
      tree = parseYaml(text);
    } catch (error) {
      throw new ClusterValueError(source, at, text, `ProxyConfig YAML (${(error as Error).message.split('\n')[0]})`);
    }
    proxyConfigs.push(parseProxyConfig(tree ?? {}, source, at));
  }
  const t = wg.spec.template ?? {};
  return {
    source,
    namespace: wg.metadata.namespace,
    name: wg.metadata.name,
    labels: { ...wg.spec.metadata?.labels, ...t.labels },
    proxyConfigs,
    template: {
      serviceAccount: t.serviceAccount ?? '',
      network: t.network ?? '',
      ports: t.ports ?? {},
      ...(t.address ? { address: t.address } : {}),
      ...(t.locality ? { locality: t.locality } : {}),
      ...(t.weight !== undefined ? { weight: t.weight } : {}),
    },
    ...(wg.spec.probe ? { probe: wg.spec.probe } : {}),
  };
}

/** A version from the istiod Deployment: the discovery container's image tag (what runs), else its version labels. */
export function istiodVersionOf(deployment: unknown, source: string): string | undefined {
  const d = deployment as {
    metadata?: { labels?: Record<string, unknown> };
    spec?: { template?: { spec?: { containers?: { name?: unknown; image?: unknown }[] } } };
  };
  const containers = d.spec?.template?.spec?.containers ?? [];
  const index = Math.max(
    0,
    containers.findIndex((c) => c.name === 'discovery'),
  );
  const image = containers[index]?.image;
  if (image !== undefined) {
    if (typeof image !== 'string' || CONTROL.test(image))
      throw new ClusterValueError(source, `spec.template.spec.containers[${index}].image`, image, 'an image reference');
    const tag = tagOf(image);
    if (tag !== undefined) {
      const version = tag.replace(/-(distroless|debug)$/, '');
      if (istioVersion.safeParse(version).success) return version;
    }
  }
  for (const key of ['app.kubernetes.io/version', 'operator.istio.io/version']) {
    const value = d.metadata?.labels?.[key];
    if (value === undefined) continue;
    return parseClusterValue(istioVersion, value, source, `metadata.labels."${key}"`);
  }
  return undefined;
}

/** The tag of an image reference (registry:port/repo:tag@digest), if it has one. */
function tagOf(image: string): string | undefined {
  const withoutDigest = image.split('@')[0]!;
  const slash = withoutDigest.lastIndexOf('/');
  const colon = withoutDigest.lastIndexOf(':');
  return colon > slash ? withoutDigest.slice(colon + 1) : undefined;
}

/** A ConfigMap's data, or undefined when it does not exist; other errors (403 with the rule to add) pass through. */
async function configMapData(k: KubernetesClient, namespace: string, name: string): Promise<Record<string, string> | undefined> {
  try {
    const cm = await k.call(`reading ConfigMap ${namespace}/${name}`, () => k.core.readNamespacedConfigMap({ name, namespace }));
    return cm.data ?? {};
  } catch (error) {
    if (error instanceof KubernetesError && error.status === 404) return undefined;
    throw error;
  }
}

/** The mesh config of a control plane: ConfigMap istio[-<rev>], key `mesh`. A missing ConfigMap is an error saying what to check. */
export async function readMeshConfig(k: KubernetesClient, cp: ControlPlane): Promise<MeshConfig> {
  const read = meshConfigRead(cp);
  return read.parse(await read.fetch(k));
}

/** The mesh config as kept between runs: the `mesh` text of ConfigMap istio[-<rev>], typed by parseMeshConfig fresh or kept. */
export function meshConfigRead(cp: ControlPlane): KeptRead<MeshConfig> {
  const name = meshConfigMapName(cp.revision);
  const source = `ConfigMap ${cp.namespace}/${name}`;
  return {
    async fetch(k) {
      const data = await configMapData(k, cp.namespace, name);
      if (!data)
        throw new Error(
          `no ${source}: the mesh config of istiod${revisioned(cp.revision) ? ` revision ${cp.revision}` : ''} (is Istio installed in ${cp.namespace}? set systemNamespace or workload.revision to the control plane this VM joins)`,
        );
      return data['mesh'] ?? null;
    },
    parse(raw) {
      if (raw === null || raw === undefined) throw new ClusterValueError(source, 'data.mesh', undefined, 'the mesh config (YAML)');
      if (typeof raw !== 'string') throw new ClusterValueError(source, 'data.mesh', raw, 'the mesh config (YAML text)');
      return parseMeshConfig(raw, source);
    },
  };
}

/** The injector's values (ConfigMap istio-sidecar-injector[-<rev>], key `values`), or undefined when there is no such ConfigMap. */
export async function readInjectorValues(k: KubernetesClient, cp: ControlPlane): Promise<InjectorValues | undefined> {
  const read = injectorValuesRead(cp);
  return read.parse(await read.fetch(k));
}

/** The injector's values as kept between runs: { values } of the ConfigMap (null: no ConfigMap), typed by parseInjectorValues. */
export function injectorValuesRead(cp: ControlPlane): KeptRead<InjectorValues | undefined> {
  const name = injectorConfigMapName(cp.revision);
  const source = `ConfigMap ${cp.namespace}/${name}`;
  return {
    async fetch(k) {
      const data = await configMapData(k, cp.namespace, name);
      return data ? { values: data['values'] ?? null } : null;
    },
    parse(raw) {
      if (raw === null) return undefined;
      if (typeof raw !== 'object' || Array.isArray(raw)) throw new ClusterValueError(source, 'data', raw, "a ConfigMap's data");
      const values = (raw as { values?: unknown }).values;
      if (values === null || values === undefined) throw new ClusterValueError(source, 'data.values', undefined, 'the injector values (JSON)');
      if (typeof values !== 'string') throw new ClusterValueError(source, 'data.values', values, 'the injector values (JSON text)');
      return parseInjectorValues(values, source);
    },
  };
}

/** The label topology.istio.io/network of a namespace, or undefined (no label, or no namespace). */
export async function readNamespaceNetwork(k: KubernetesClient, namespace: string): Promise<string | undefined> {
  const read = namespaceNetworkRead(namespace);
  return read.parse(await read.fetch(k));
}

/** The network label as kept between runs: its value (null: no label, or no namespace), checked as a label value fresh or kept. */
export function namespaceNetworkRead(namespace: string): KeptRead<string | undefined> {
  return {
    async fetch(k) {
      let ns: { metadata?: { labels?: Record<string, string> } };
      try {
        ns = await k.call(`reading Namespace ${namespace}`, () => k.core.readNamespace({ name: namespace }));
      } catch (error) {
        if (error instanceof KubernetesError && error.status === 404) return null;
        throw error;
      }
      return ns.metadata?.labels?.[NETWORK_LABEL] ?? null;
    },
    parse(raw) {
      if (raw === null) return undefined;
      return parseClusterValue(labelValue, raw, `Namespace ${namespace}`, `metadata.labels."${NETWORK_LABEL}"`);
    },
  };
}

/** The WorkloadGroup (networking.istio.io/v1), or undefined when it does not exist. */
export async function readWorkloadGroup(k: KubernetesClient, namespace: string, name: string): Promise<WorkloadGroup | undefined> {
  const found = await readObject(k, WORKLOAD_GROUPS, namespace, name);
  return found && parseWorkloadGroup(found, namespace);
}

/**
 * istiod's version, from its Deployment istiod[-<rev>]: the discovery container's image tag when it is a version (the
 * binary that runs; "-distroless"/"-debug" variants stripped), else the label app.kubernetes.io/version (the Helm chart,
 * istioctl install) or operator.istio.io/version (the operator). undefined when there is no such Deployment (an
 * external control plane) or nothing names a version (an image by digest, no labels).
 */
export async function readIstiodVersion(k: KubernetesClient, cp: ControlPlane): Promise<string | undefined> {
  const read = istiodVersionRead(cp);
  return read.parse(await read.fetch(k));
}

/** istiod's version as kept between runs: what istiodVersionOf looks at in the Deployment (null: none), read by it fresh or kept. */
export function istiodVersionRead(cp: ControlPlane): KeptRead<string | undefined> {
  const name = istiodDeploymentName(cp.revision);
  const source = `Deployment ${cp.namespace}/${name}`;
  return {
    async fetch(k) {
      let deployment: { metadata?: { labels?: Record<string, string> }; spec?: { template?: { spec?: { containers?: { name?: string; image?: string }[] } } } };
      try {
        deployment = await k.call(`reading ${source}`, () => k.apps.readNamespacedDeployment({ name, namespace: cp.namespace }));
      } catch (error) {
        if (error instanceof KubernetesError && error.status === 404) return null;
        throw error;
      }
      const containers = (deployment.spec?.template?.spec?.containers ?? []).map((c) => ({
        ...(c.name !== undefined && { name: c.name }),
        ...(c.image !== undefined && { image: c.image }),
      }));
      return JSON.parse(JSON.stringify({ metadata: { labels: deployment.metadata?.labels ?? {} }, spec: { template: { spec: { containers } } } }));
    },
    parse(raw) {
      if (raw === null) return undefined;
      const containers = (raw as { spec?: { template?: { spec?: { containers?: unknown } } } } | undefined)?.spec?.template?.spec?.containers;
      if (!raw || typeof raw !== 'object' || (containers !== undefined && !Array.isArray(containers)))
        throw new ClusterValueError(source, 'spec.template.spec.containers', containers, 'a list of containers');
      return istiodVersionOf(raw, source);
    },
  };
}

export { showValue };
