// Kubernetes API server v1.33 (core/v1, apps/v1 Deployment, networking.k8s.io/v1 ServiceCIDR, authentication.k8s.io/v1 TokenRequest, coordination.k8s.io/v1 Lease,
// networking.istio.io/v1 WorkloadEntry, WorkloadGroup and Sidecar with their CRD schemas and status subresource), bearer tokens, RBAC,
// PATCH as merge-patch+json and server-side apply (apply-patch+yaml, managedFields), and an Istio control plane to install.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { generateKeyPair, randomUUID, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { isDeepStrictEqual, promisify } from 'node:util';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { delay, Faults, listen, readBody, recordCall, resetConnection, sendJson } from './common.ts';
import type { Call, CommonFault } from './common.ts';
import { Seats } from './limits.ts';

/** RBAC rule. apiGroups defaults to ["*"]; namespaces omitted = cluster-wide (ClusterRoleBinding), else RoleBindings there. */
export interface RbacRule {
  verbs: string[];
  resources: string[];
  apiGroups?: string[];
  resourceNames?: string[];
  namespaces?: string[];
}
export interface KubeIdentity {
  user: string;
  groups?: string[];
  /** ms since epoch; past = expired (401). */
  expiresAt?: number;
  /** Bound token audiences; must intersect the server's apiAudiences. Omitted = static token, always accepted. */
  audiences?: string[];
  serviceAccount?: { namespace: string; name: string };
}
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  [k: string]: unknown;
}

export interface KubernetesOptions {
  /** HTTPS with the shared test CA (default true). */
  tls?: boolean;
  port?: number;
  gitVersion?: string;
  /** ServiceCIDR objects by name, or the CIDRs of the single "kubernetes" one. Default { kubernetes: ["10.96.0.0/12"] }. */
  serviceCIDRs?: string[] | Record<string, string[]>;
  /**
   * false = cluster older than v1.33: servicecidrs is an unknown resource (404) and a non-dry-run create with an
   * out-of-range clusterIP names the range (old bitmap allocator). true (default, v1.33 MultiCIDR allocator): such a
   * create says "the provided network does not match the current range"; a dryRun=All create names one ServiceCIDR.
   */
  serviceCIDRApi?: boolean;
  /** Static bearer tokens. */
  tokens?: Record<string, KubeIdentity>;
  /** RBAC rules by user name or group name ("system:masters" bypasses RBAC, as in a real cluster). */
  rbac?: Record<string, RbacRule[]>;
  /** "namespace/name" of ServiceAccounts that exist (TokenRequest targets). */
  serviceAccounts?: string[];
  objects?: KubeObject[];
  /** Allow requests without a token as system:anonymous (default false: 401). */
  anonymous?: boolean;
  apiAudiences?: string[];
  issuer?: string;
  /** Like --service-account-max-token-expiration. */
  maxTokenExpirationSeconds?: number;
  /** Lets a test alter the validity the issuer grants (after the max cap). */
  tokenExpiration?: (requestedSeconds: number) => number;
  /**
   * The API server's overload protection; off by default. kube-apiserver seats at most --max-requests-inflight (400)
   * + --max-mutating-requests-inflight (200) requests at once, split by API Priority and Fairness into priority levels
   * (a VM's ServiceAccount falls in workload-low: 100 of the 245 default shares, about 245 seats); a request it cannot
   * seat once its queue is full gets 429 TooManyRequests with `Retry-After: 1` (a constant there, kubernetes#117734).
   * Here: `concurrency` seats and no queue (the strict case); each request holds its seat `serviceMs` more (the work).
   */
  limits?: { concurrency: number; serviceMs?: number; retryAfterSeconds?: number };
}

export type KubernetesFault =
  | CommonFault
  | { kind: 'throttle'; retryAfter?: number }
  /** The bearer token of the matching request expires just before it is handled (401). */
  | { kind: 'expire-token' };

interface ResourceInfo {
  group: string;
  version: string;
  kind: string;
  namespaced: boolean;
  /** Writes to the object ignore `status`; `<resource>/status` writes only it (as for Istio's CRDs). */
  statusSubresource?: boolean;
  /** The CRD's structural schema of `spec`: unknown fields pruned, types and rules enforced (422). */
  spec?: Schema;
}

/** A structural schema, as a CRD's openAPIV3Schema (with x-kubernetes-validations as `rules`). */
type Schema =
  | { type: 'string'; maxLength?: number; pattern?: RegExp }
  | { type: 'integer'; minimum?: number; maximum?: number; rules?: Rule<number>[] }
  | { type: 'boolean' }
  | { type: 'object'; properties: Record<string, Schema>; required?: string[]; rules?: Rule<Record<string, unknown>>[] }
  | { type: 'map'; values: Schema; maxProperties?: number; rules?: Rule<Record<string, unknown>>[] }
  | { type: 'array'; items: Schema };
interface Rule<T> {
  holds: (value: T) => boolean;
  message: string;
}

const u32 = { minimum: 0, maximum: 4294967295 } as const;
const portNumber: Schema = { type: 'integer', ...u32, rules: [{ holds: (n) => n > 0 && n <= 65535, message: 'port must be between 1-65535' }] };
const stringMap = (maxProperties?: number): Schema => ({ type: 'map', values: { type: 'string' }, ...(maxProperties ? { maxProperties } : {}) });
const hasAddress = (spec: Record<string, unknown>): string => (typeof spec['address'] === 'string' ? spec['address'] : '');
/** networking.istio.io/v1 WorkloadEntry spec (Istio's CRD, crd-all.gen.yaml); a WorkloadGroup's template is the same less the address rule. */
const workloadEntryProperties: Record<string, Schema> = {
  address: {
    type: 'string',
    maxLength: 256,
  },
  labels: stringMap(256),
  locality: { type: 'string', maxLength: 2048 },
  network: { type: 'string', maxLength: 2048 },
  ports: {
    type: 'map',
    values: portNumber,
    maxProperties: 128,
    rules: [
      { holds: (m) => Object.keys(m).every((k) => k.length < 63 && /^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$/.test(k)), message: 'port name must be valid' },
    ],
  },
  serviceAccount: { type: 'string', maxLength: 253 },
  weight: { type: 'integer', ...u32 },
};
const udsRules: Rule<Record<string, unknown>>[] = [
  {
    holds: (s) => !hasAddress(s).startsWith('unix://') || ['/', '@'].includes(hasAddress(s).slice(7, 8)),
    message: 'UDS must be an absolute path or abstract socket',
  },
  { holds: (s) => !hasAddress(s).startsWith('unix://') || !hasAddress(s).endsWith('/'), message: 'UDS may not be a dir' },
  { holds: (s) => !hasAddress(s).startsWith('unix://') || s['ports'] === undefined, message: 'UDS may not include ports' },
];
const WORKLOAD_ENTRY: Schema = {
  type: 'object',
  properties: workloadEntryProperties,
  rules: [{ holds: (s) => s['address'] !== undefined || s['network'] !== undefined, message: 'Address is required' }, ...udsRules],
};
const int32: Schema = { type: 'integer', minimum: 0 };
const WORKLOAD_GROUP: Schema = {
  type: 'object',
  required: ['template'],
  properties: {
    metadata: { type: 'object', properties: { annotations: stringMap(256), labels: stringMap(256) } },
    probe: {
      type: 'object',
      properties: {
        exec: { type: 'object', properties: { command: { type: 'array', items: { type: 'string' } } } },
        failureThreshold: int32,
        grpc: { type: 'object', properties: { port: portNumber, service: { type: 'string' } } },
        httpGet: {
          type: 'object',
          required: ['port'],
          properties: {
            host: { type: 'string' },
            httpHeaders: {
              type: 'array',
              items: { type: 'object', properties: { name: { type: 'string', pattern: /^[-_A-Za-z0-9]+$/ }, value: { type: 'string' } } },
            },
            path: { type: 'string' },
            port: portNumber,
            scheme: { type: 'string' },
          },
        },
        initialDelaySeconds: int32,
        periodSeconds: int32,
        successThreshold: int32,
        tcpSocket: { type: 'object', required: ['port'], properties: { host: { type: 'string' }, port: portNumber } },
        timeoutSeconds: int32,
      },
      rules: [
        {
          holds: (p) => ['httpGet', 'tcpSocket', 'exec', 'grpc'].filter((k) => p[k] !== undefined).length <= 1,
          message: 'At most one of [httpGet tcpSocket exec grpc] should be set',
        },
      ],
    },
    template: { type: 'object', properties: workloadEntryProperties, rules: udsRules },
  },
};

/** networking.istio.io/v1 Sidecar spec (Istio's CRD, crd-all.gen.yaml; tls and connection pools left out: unknown fields are pruned). */
const sidecarPort: Schema = {
  type: 'object',
  properties: { number: { type: 'integer', ...u32 }, protocol: { type: 'string' }, name: { type: 'string' }, targetPort: { type: 'integer', ...u32 } },
};
const captureMode: Schema = { type: 'string', pattern: /^(DEFAULT|IPTABLES|NONE)$/ };
const SIDECAR: Schema = {
  type: 'object',
  properties: {
    workloadSelector: { type: 'object', properties: { labels: stringMap(256) } },
    ingress: {
      type: 'array',
      items: {
        type: 'object',
        required: ['port'],
        properties: { port: sidecarPort, bind: { type: 'string' }, captureMode, defaultEndpoint: { type: 'string' } },
      },
    },
    egress: {
      type: 'array',
      items: {
        type: 'object',
        required: ['hosts'],
        properties: { port: sidecarPort, bind: { type: 'string' }, captureMode, hosts: { type: 'array', items: { type: 'string' } } },
      },
    },
    outboundTrafficPolicy: { type: 'object', properties: { mode: { type: 'string', pattern: /^(REGISTRY_ONLY|ALLOW_ANY)$/ } } },
  },
};

/** coordination.k8s.io/v1 LeaseSpec (renewTime and acquireTime are MicroTime strings). */
const LEASE: Schema = {
  type: 'object',
  properties: {
    holderIdentity: { type: 'string' },
    leaseDurationSeconds: { type: 'integer', minimum: 0, maximum: 2147483647 },
    acquireTime: { type: 'string' },
    renewTime: { type: 'string' },
    leaseTransitions: { type: 'integer', minimum: 0, maximum: 2147483647 },
  },
};

const RESOURCES: Record<string, ResourceInfo> = {
  configmaps: { group: '', version: 'v1', kind: 'ConfigMap', namespaced: true },
  namespaces: { group: '', version: 'v1', kind: 'Namespace', namespaced: false },
  secrets: { group: '', version: 'v1', kind: 'Secret', namespaced: true },
  services: { group: '', version: 'v1', kind: 'Service', namespaced: true },
  serviceaccounts: { group: '', version: 'v1', kind: 'ServiceAccount', namespaced: true },
  deployments: { group: 'apps', version: 'v1', kind: 'Deployment', namespaced: true },
  servicecidrs: { group: 'networking.k8s.io', version: 'v1', kind: 'ServiceCIDR', namespaced: false },
  leases: { group: 'coordination.k8s.io', version: 'v1', kind: 'Lease', namespaced: true, spec: LEASE },
  workloadentries: { group: 'networking.istio.io', version: 'v1', kind: 'WorkloadEntry', namespaced: true, statusSubresource: true, spec: WORKLOAD_ENTRY },
  workloadgroups: { group: 'networking.istio.io', version: 'v1', kind: 'WorkloadGroup', namespaced: true, statusSubresource: true, spec: WORKLOAD_GROUP },
  sidecars: { group: 'networking.istio.io', version: 'v1', kind: 'Sidecar', namespaced: true, statusSubresource: true, spec: SIDECAR },
};
const resourceOfKind = (kind: string | undefined): string | undefined => Object.keys(RESOURCES).find((r) => RESOURCES[r]!.kind === kind);
const apiVersionOf = (i: ResourceInfo): string => (i.group === '' ? i.version : `${i.group}/${i.version}`);
const qualified = (resource: string): string => (RESOURCES[resource]?.group ? `${resource}.${RESOURCES[resource].group}` : resource);

/** In-memory object storage; every write bumps a cluster-wide resourceVersion. */
export class ObjectStore {
  #items = new Map<string, KubeObject>();
  #rv = 1000;

  static key(resource: string, namespace: string | undefined, name: string): string {
    return `${resource}/${namespace ?? ''}/${name}`;
  }

  /** Creates or replaces (kind must be one of the served kinds); returns the stored copy. */
  put(obj: KubeObject): KubeObject {
    const resource = resourceOfKind(obj.kind) ?? fail(`unsupported kind ${String(obj.kind)}`);
    const info = RESOURCES[resource]!;
    const stored = structuredClone(obj);
    const namespace = info.namespaced ? (stored.metadata.namespace ?? 'default') : undefined;
    const old = this.#items.get(ObjectStore.key(resource, namespace, stored.metadata.name));
    stored.apiVersion = apiVersionOf(info);
    stored.metadata = {
      ...stored.metadata,
      ...(namespace === undefined ? {} : { namespace }),
      uid: old?.metadata['uid'] ?? randomUUID(),
      resourceVersion: String(++this.#rv),
      creationTimestamp: old?.metadata['creationTimestamp'] ?? rfc3339(new Date()),
      // generation counts changes of spec (what the object asks for), not of status or metadata
      ...(info.group === '' ? {} : { generation: Number(old?.metadata['generation'] ?? 0) + (old && isDeepStrictEqual(old['spec'], stored['spec']) ? 0 : 1) }),
    };
    this.#items.set(ObjectStore.key(resource, namespace, stored.metadata.name), stored);
    return structuredClone(stored);
  }

  get(resource: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const o = this.#items.get(ObjectStore.key(resource, namespace, name));
    return o && structuredClone(o);
  }

  list(resource: string, namespace?: string): KubeObject[] {
    return [...this.#items.entries()]
      .filter(([k, o]) => k.startsWith(`${resource}/`) && (namespace === undefined || o.metadata.namespace === namespace))
      .map(([, o]) => structuredClone(o))
      .sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
  }

  delete(resource: string, namespace: string | undefined, name: string): boolean {
    return this.#items.delete(ObjectStore.key(resource, namespace, name));
  }

  get resourceVersion(): string {
    return String(this.#rv);
  }

  setConfigMap(namespace: string, name: string, data: Record<string, string>): KubeObject {
    return this.put({ kind: 'ConfigMap', metadata: { name, namespace }, data });
  }

  /** Values are given in clear and stored base64-encoded in `data`, as the API serves them. */
  setSecret(namespace: string, name: string, data: Record<string, string>, type = 'Opaque'): KubeObject {
    const encoded = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
    return this.put({ kind: 'Secret', metadata: { name, namespace }, type, data: encoded });
  }

  /** e.g. setService('istio-system', 'istio-eastwestgateway', { type: 'LoadBalancer', ports: [...] }, { loadBalancer: { ingress: [{ hostname }] } }). */
  setService(
    namespace: string,
    name: string,
    spec: Record<string, unknown>,
    status: Record<string, unknown> = { loadBalancer: {} },
    labels?: Record<string, string>,
  ): KubeObject {
    return this.put({ kind: 'Service', metadata: { name, namespace, ...(labels ? { labels } : {}) }, spec, status });
  }

  addServiceAccount(namespace: string, name: string): KubeObject {
    return this.put({ kind: 'ServiceAccount', metadata: { name, namespace } });
  }

  /** A Namespace as the API serves it (the kubernetes.io/metadata.name label included), e.g. with topology.istio.io/network. */
  setNamespace(name: string, labels: Record<string, string> = {}): KubeObject {
    return this.put({
      kind: 'Namespace',
      metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    });
  }

  /** Replaces an object's status (as its controller would through the status subresource): spec and generation stay. */
  setStatus(resource: string, namespace: string | undefined, name: string, status: Record<string, unknown>): KubeObject {
    const old = this.get(resource, namespace, name) ?? fail(`no ${resource} ${namespace ?? ''}/${name} to set the status of`);
    return this.put({ ...old, status });
  }

  /**
   * The Healthy condition istiod writes on a WorkloadEntry whose health checks are on (IstioStatus.conditions):
   * lastTransitionTime moves only when the status flips.
   */
  setWorkloadEntryHealth(namespace: string, name: string, healthy: boolean, message?: string): KubeObject {
    const old = this.get('workloadentries', namespace, name) ?? fail(`no WorkloadEntry ${namespace}/${name}`);
    const status = (old['status'] ?? {}) as { conditions?: Record<string, unknown>[] };
    const previous = status.conditions?.find((c) => c['type'] === 'Healthy');
    const now = rfc3339(new Date());
    const value = healthy ? 'True' : 'False';
    const condition = {
      type: 'Healthy',
      status: value,
      lastProbeTime: now,
      lastTransitionTime: previous?.['status'] === value ? previous['lastTransitionTime'] : now,
      ...(message ? { message } : {}),
    };
    const others = (status.conditions ?? []).filter((c) => c['type'] !== 'Healthy');
    return this.setStatus('workloadentries', namespace, name, { ...status, conditions: [...others, condition] });
  }

  /**
   * An Istio control plane as the istiod Helm chart (and `istioctl install`) leaves it: the system Namespace, the mesh config
   * ConfigMap `istio[-<rev>]`, the injector ConfigMap `istio-sidecar-injector[-<rev>]` (its `values` JSON) and the istiod
   * Deployment (labels with app.kubernetes.io/version, the pilot image). Returns the objects stored.
   */
  installIstio(o: IstioInstall = {}): { namespace: KubeObject; mesh: KubeObject; injector: KubeObject; istiod: KubeObject } {
    const ns = o.namespace ?? 'istio-system';
    const revision = o.revision ?? '';
    const suffix = revision && revision !== 'default' ? `-${revision}` : '';
    const version = o.version ?? '1.24.2';
    const rev = revision || 'default';
    const chartLabels = { 'istio.io/rev': rev, 'install.operator.istio.io/owning-resource': 'unknown', 'operator.istio.io/component': 'Pilot' };
    const defaultMesh = {
      defaultConfig: { discoveryAddress: `istiod${suffix}.${ns}.svc:15012`, ...(o.meshId ? { meshId: o.meshId } : {}) },
      defaultProviders: { metrics: ['prometheus'] },
      enablePrometheusMerge: true,
      rootNamespace: ns,
      trustDomain: o.trustDomain ?? 'cluster.local',
    };
    const mesh = typeof o.mesh === 'string' ? o.mesh : stringifyYaml(o.mesh ?? defaultMesh, { sortMapEntries: true }).trimEnd();
    const baseValues = {
      global: {
        istioNamespace: ns,
        meshID: o.meshId ?? '',
        multiCluster: { clusterName: o.clusterName ?? '', enabled: false },
        network: o.network ?? '',
        proxy: { clusterDomain: 'cluster.local', image: 'proxyv2' },
        hub: 'docker.io/istio',
        tag: version,
      },
      revision,
    };
    const values = typeof o.values === 'string' ? o.values : JSON.stringify(deepMerge(baseValues, o.values ?? {}));
    const namespace = this.setNamespace(ns, o.namespaceNetwork ? { 'topology.istio.io/network': o.namespaceNetwork } : {});
    const meshCm = this.put({
      kind: 'ConfigMap',
      metadata: { name: `istio${suffix}`, namespace: ns, labels: { ...chartLabels, release: 'istiod' } },
      data: { mesh, meshNetworks: 'networks: {}' },
    });
    const injector = this.put({
      kind: 'ConfigMap',
      metadata: { name: `istio-sidecar-injector${suffix}`, namespace: ns, labels: { ...chartLabels, release: 'istiod' } },
      data: { config: 'defaultTemplates: [sidecar]\npolicy: enabled\ntemplates:\n  sidecar: |\n    spec: {}', values },
    });
    const labels = {
      app: 'istiod',
      ...chartLabels,
      istio: 'pilot',
      release: 'istiod',
      'app.kubernetes.io/name': 'istiod',
      'app.kubernetes.io/managed-by': 'Helm',
      'app.kubernetes.io/instance': 'istiod',
      'app.kubernetes.io/part-of': 'istio',
      'app.kubernetes.io/version': version,
      'helm.sh/chart': `istiod-${version}`,
      ...o.deploymentLabels,
    };
    const istiod = this.put({
      kind: 'Deployment',
      metadata: { name: `istiod${suffix}`, namespace: ns, labels },
      spec: {
        replicas: 1,
        selector: { matchLabels: revision ? { app: 'istiod', 'istio.io/rev': rev } : { istio: 'pilot' } },
        template: {
          metadata: { labels: { app: 'istiod', 'istio.io/rev': rev, 'sidecar.istio.io/inject': 'false', istio: revision ? 'istiod' : 'pilot' } },
          spec: {
            serviceAccountName: `istiod${suffix}`,
            containers: [
              {
                name: 'discovery',
                image: o.image ?? `docker.io/istio/pilot:${version}`,
                args: [
                  'discovery',
                  '--monitoringAddr=:15014',
                  '--log_output_level=default:info',
                  '--domain',
                  'cluster.local',
                  '--keepaliveMaxServerConnectionAge',
                  '30m',
                ],
                ports: [
                  { containerPort: 8080, protocol: 'TCP' },
                  { containerPort: 15010, protocol: 'TCP' },
                  { containerPort: 15017, protocol: 'TCP' },
                ],
                env: [
                  { name: 'REVISION', value: rev },
                  { name: 'ISTIOD_ADDR', value: `istiod${suffix}.${ns}.svc:15012` },
                  { name: 'CLUSTER_ID', value: o.clusterName || 'Kubernetes' },
                ],
              },
            ],
          },
        },
      },
      status: { observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1, availableReplicas: 1 },
    });
    return { namespace, mesh: meshCm, injector, istiod };
  }
}

/** What installIstio puts in the cluster; every field has the chart's default. */
export interface IstioInstall {
  /** The system namespace (istio-system). */
  namespace?: string;
  /** An istiod revision ("canary"); '' (default) for none. */
  revision?: string;
  /** The Istio version (1.24.2): the pilot image tag and the app.kubernetes.io/version label. */
  version?: string;
  /** The `mesh` key: YAML text stored as given, or an object rendered as YAML; default what the chart renders. */
  mesh?: string | Record<string, unknown>;
  /** In the default mesh config: trustDomain (cluster.local). */
  trustDomain?: string;
  /** global.meshID: defaultConfig.meshId of the default mesh config, and the injector values. */
  meshId?: string;
  /** global.multiCluster.clusterName in the injector values ('' as the chart leaves it). */
  clusterName?: string;
  /** global.network in the injector values. */
  network?: string;
  /** topology.istio.io/network on the system namespace. */
  namespaceNetwork?: string;
  /** The istiod container image (docker.io/istio/pilot:<version>). */
  image?: string;
  /** Labels of the istiod Deployment over the chart's (e.g. a stale or absent app.kubernetes.io/version). */
  deploymentLabels?: Record<string, string>;
  /** Injector values merged over the chart's, or the raw `values` text. */
  values?: Record<string, unknown> | string;
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface MintedToken {
  token: string;
  expirationTimestamp: Date;
  expirationSeconds: number;
  audiences: string[];
}

/** Bearer tokens the server accepts: static ones and ServiceAccount tokens minted by TokenRequest (or by Vault via mint()). */
export class TokenRegistry {
  #identities = new Map<string, KubeIdentity>();
  #mint: (r: { namespace: string; serviceAccount: string; expirationSeconds?: number; audiences?: string[] }) => MintedToken;

  constructor(mint: TokenRegistry['mint']) {
    this.#mint = mint;
  }

  add(token: string, identity: KubeIdentity): void {
    this.#identities.set(token, { ...identity });
  }

  lookup(token: string): KubeIdentity | undefined {
    return this.#identities.get(token);
  }

  /** Same path as a TokenRequest (validation, caps, issuer hook) but without RBAC; throws on an unknown SA or bad duration. */
  mint(r: { namespace: string; serviceAccount: string; expirationSeconds?: number; audiences?: string[] }): MintedToken {
    return this.#mint(r);
  }

  expire(token: string): void {
    const id = this.#identities.get(token);
    if (id) id.expiresAt = Date.now() - 1;
  }

  revoke(token: string): void {
    this.#identities.delete(token);
  }
}

export interface KubernetesStandIn {
  /** https://127.0.0.1:PORT */
  url: string;
  port: number;
  /** PEM of the CA that signed the serving cert (undefined with tls: false). */
  caPem: string;
  faults: Faults<KubernetesFault>;
  calls: Call[];
  tokens: TokenRegistry;
  objects: ObjectStore;
  /** Live RBAC table (user or group → rules); mutate to change permissions mid-test. */
  rbac: Map<string, RbacRule[]>;
  /** PEM public key that verifies minted ServiceAccount JWTs (RS256). */
  serviceAccountPublicKeyPem: string;
  stop(): Promise<void>;
}

class KubeError extends Error {
  status: number;
  body: Record<string, unknown> | string;
  constructor(status: number, body: Record<string, unknown> | string) {
    super(typeof body === 'string' ? body : String(body['message']));
    this.status = status;
    this.body = body;
  }
}
function fail(message: string): never {
  throw new Error(message);
}
const statusObject = (code: number, reason: string, message: string, details?: Record<string, unknown>): Record<string, unknown> => ({
  kind: 'Status',
  apiVersion: 'v1',
  metadata: {},
  status: 'Failure',
  message,
  reason,
  ...(details ? { details } : {}),
  code,
});
const statusError = (code: number, reason: string, message: string, details?: Record<string, unknown>): never => {
  throw new KubeError(code, statusObject(code, reason, message, details));
};
/** 422 for one invalid field, as apimachinery's errors.NewInvalid renders it. */
const invalid = (kind: string, group: string, name: string, field: string, value: string, detail: string): never => {
  const body = `Invalid value: ${value}: ${detail}`;
  const qualifiedKind = group === '' ? kind : `${kind}.${group}`;
  return statusError(422, 'Invalid', `${qualifiedKind} "${name}" is invalid: ${field}: ${body}`, {
    name,
    ...(group === '' ? {} : { group }),
    kind,
    causes: [{ reason: 'FieldValueInvalid', message: body, field }],
  });
};
const notFound = (resource: string, name: string): never =>
  statusError(404, 'NotFound', `${qualified(resource)} "${name}" not found`, {
    name,
    ...(RESOURCES[resource]?.group ? { group: RESOURCES[resource].group } : {}),
    kind: resource,
  });

function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const jsonType = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v;

/**
 * What the API server does with a custom resource's spec: unknown fields pruned (listed in `pruned`, for the Warning
 * header), nulls dropped, types, bounds and x-kubernetes-validations checked; `errors` in apimachinery's field wording.
 */
function checkSchema(value: unknown, schema: Schema, path: string, errors: string[], pruned: string[]): unknown {
  const typeError = (want: string): undefined => {
    errors.push(`${path}: Invalid value: "${jsonType(value)}": ${path} in body must be of type ${want}: "${jsonType(value)}"`);
    return undefined;
  };
  switch (schema.type) {
    case 'string':
      if (typeof value !== 'string') return typeError('string');
      if (schema.maxLength !== undefined && value.length > schema.maxLength) errors.push(`${path}: Too long: may not be more than ${schema.maxLength} bytes`);
      if (schema.pattern && !schema.pattern.test(value))
        errors.push(`${path}: Invalid value: ${JSON.stringify(value)}: ${path} in body should match '${schema.pattern.source}'`);
      return value;
    case 'integer':
      if (typeof value !== 'number' || !Number.isInteger(value)) return typeError('integer');
      if (schema.minimum !== undefined && value < schema.minimum)
        errors.push(`${path}: Invalid value: ${value}: ${path} in body should be greater than or equal to ${schema.minimum}`);
      if (schema.maximum !== undefined && value > schema.maximum)
        errors.push(`${path}: Invalid value: ${value}: ${path} in body should be less than or equal to ${schema.maximum}`);
      for (const rule of schema.rules ?? []) if (!rule.holds(value)) errors.push(`${path}: Invalid value: "integer": ${rule.message}`);
      return value;
    case 'boolean':
      return typeof value === 'boolean' ? value : typeError('boolean');
    case 'array':
      if (!Array.isArray(value)) return typeError('array');
      return value.map((item, i) => checkSchema(item, schema.items, `${path}[${i}]`, errors, pruned));
    case 'object':
    case 'map': {
      if (!isPlainObject(value)) return typeError('object');
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) {
        if (v === null) continue;
        const sub = schema.type === 'map' ? schema.values : schema.properties[k];
        if (!sub) {
          pruned.push(`${path}.${k}`);
          continue;
        }
        out[k] = checkSchema(v, sub, `${path}.${k}`, errors, pruned);
      }
      if (schema.type === 'object') for (const r of schema.required ?? []) if (out[r] === undefined) errors.push(`${path}.${r}: Required value`);
      if (schema.type === 'map' && schema.maxProperties !== undefined && Object.keys(out).length > schema.maxProperties)
        errors.push(`${path}: Too many: ${Object.keys(out).length}: must have at most ${schema.maxProperties} items`);
      for (const rule of schema.rules ?? []) if (!rule.holds(out)) errors.push(`${path}: Invalid value: "object": ${rule.message}`);
      return out;
    }
  }
}

/** A field path of server-side apply: ["spec","template","address"], shown as .spec.template.address. */
type FieldPath = string[];
const showPath = (p: FieldPath): string => `.${p.join('.')}`;
const isPrefix = (a: FieldPath, b: FieldPath): boolean => a.length <= b.length && a.every((seg, i) => seg === b[i]);
const overlaps = (a: FieldPath, b: FieldPath): boolean => isPrefix(a, b) || isPrefix(b, a);

/** The fields a manager sets: down to scalars (lists and empty maps as wholes); of metadata only labels and annotations. */
function leafPaths(obj: Record<string, unknown>): FieldPath[] {
  const out: FieldPath[] = [];
  const walk = (v: unknown, p: FieldPath) => {
    if (isPlainObject(v) && Object.keys(v).length > 0) for (const [k, x] of Object.entries(v)) walk(x, [...p, k]);
    else out.push(p);
  };
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'apiVersion' || k === 'kind' || k === 'status') continue;
    if (k !== 'metadata') walk(v, [k]);
    else if (isPlainObject(v)) for (const m of ['labels', 'annotations']) if (isPlainObject(v[m])) walk(v[m], ['metadata', m]);
  }
  return out;
}

function getAt(obj: unknown, p: FieldPath): unknown {
  let v = obj;
  for (const seg of p) v = isPlainObject(v) ? v[seg] : undefined;
  return v;
}
function setAt(obj: Record<string, unknown>, p: FieldPath, value: unknown): void {
  let node = obj;
  for (const seg of p.slice(0, -1)) {
    if (!isPlainObject(node[seg])) node[seg] = {};
    node = node[seg] as Record<string, unknown>;
  }
  node[p[p.length - 1]!] = structuredClone(value);
}
/** Removes a field, and the maps it leaves empty (as server-side apply removes the structs only its fields made). */
function deleteAt(obj: Record<string, unknown>, p: FieldPath): void {
  for (let depth = p.length; depth > 0; depth--) {
    const parent = getAt(obj, p.slice(0, depth - 1));
    if (!isPlainObject(parent)) return;
    const key = p[depth - 1]!;
    if (depth < p.length && !(isPlainObject(parent[key]) && Object.keys(parent[key]).length === 0)) return;
    delete parent[key];
  }
}

/** metadata.managedFields, as the API server records them (FieldsV1). */
interface ManagedEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  time: string;
  fieldsType: 'FieldsV1';
  fieldsV1: Record<string, unknown>;
  subresource?: string;
}
function encodeFields(paths: readonly FieldPath[]): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const p of paths) {
    let node = root;
    for (const seg of p) {
      node[`f:${seg}`] ??= {};
      node = node[`f:${seg}`] as Record<string, unknown>;
    }
  }
  return root;
}
function decodeFields(fields: Record<string, unknown>, prefix: FieldPath = []): FieldPath[] {
  const children = Object.entries(fields).filter(([k]) => k.startsWith('f:'));
  if (children.length === 0) return prefix.length ? [prefix] : [];
  return children.flatMap(([k, v]) => decodeFields(isPlainObject(v) ? v : {}, [...prefix, k.slice(2)]));
}
const managersOf = (o: KubeObject | undefined): ManagedEntry[] => structuredClone((o?.metadata['managedFields'] as ManagedEntry[] | undefined) ?? []);

/** An object without the managed fields' times (a write that changes nothing else is a no-op). */
function stripVolatile(o: KubeObject): KubeObject {
  const copy = structuredClone(o);
  const entries = copy.metadata['managedFields'] as ManagedEntry[] | undefined;
  if (entries) copy.metadata['managedFields'] = entries.map(({ time: _t, ...rest }) => rest);
  return copy;
}

/** merge-patch+json (RFC 7386): objects merge, null removes, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = isPlainObject(target) ? structuredClone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** After an Update (create, replace, merge patch): the fields it changed move to its manager, away from the others. */
function recordUpdate(before: KubeObject | undefined, after: KubeObject, manager: string, apiVersion: string): ManagedEntry[] {
  const entries = managersOf(before);
  const was = before ? leafPaths(before) : [];
  const now = leafPaths(after);
  const changed = now.filter((p) => !before || !isDeepStrictEqual(getAt(before, p), getAt(after, p)));
  const removed = was.filter((p) => getAt(after, p) === undefined);
  if (changed.length === 0 && removed.length === 0) return entries;
  const touched = [...changed, ...removed];
  for (const e of entries) {
    if (e.operation === 'Update' && e.manager === manager && !e.subresource) continue;
    e.fieldsV1 = encodeFields(decodeFields(e.fieldsV1).filter((p) => !touched.some((q) => overlaps(p, q))));
  }
  let own = entries.find((e) => e.operation === 'Update' && e.manager === manager && !e.subresource);
  if (!own) {
    own = { manager, operation: 'Update', apiVersion, time: '', fieldsType: 'FieldsV1', fieldsV1: {} };
    entries.push(own);
  }
  const mine = decodeFields(own.fieldsV1).filter((p) => getAt(after, p) !== undefined && !changed.some((q) => overlaps(p, q)));
  own.fieldsV1 = encodeFields([...mine, ...changed]);
  own.time = rfc3339(new Date());
  own.apiVersion = apiVersion;
  return entries.filter((e) => decodeFields(e.fieldsV1).length > 0);
}

/** IPv4/IPv6 address as a number, for CIDR arithmetic. */
function ipToBig(ip: string): { v6: boolean; n: bigint } {
  if (isIP(ip) === 4) return { v6: false, n: ip.split('.').reduce((n, o) => (n << 8n) + BigInt(o), 0n) };
  const [head = '', tail = ''] = ip.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = ip.includes('::') ? (tail === '' ? [] : tail.split(':')) : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return { v6: true, n: groups.reduce((n, g) => (n << 16n) + BigInt(parseInt(g, 16)), 0n) };
}
function bigToIp(n: bigint, v6: boolean): string {
  if (!v6) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');
  const groups = [112n, 96n, 80n, 64n, 48n, 32n, 16n, 0n].map((s) => ((n >> s) & 0xffffn).toString(16));
  return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}
function inCidr(ip: string, cidr: string): boolean {
  const [base = '', bits = '0'] = cidr.split('/');
  const a = ipToBig(ip);
  const b = ipToBig(base);
  const width = a.v6 ? 128n : 32n;
  const shift = width - BigInt(bits);
  return a.v6 === b.v6 && a.n >> shift === b.n >> shift;
}

let sharedKey: Promise<{ privateKey: KeyObject; publicKey: KeyObject }> | undefined;
/** One RS256 service-account signing key per process (key generation dominates start-up time). */
function signingKey(): Promise<{ privateKey: KeyObject; publicKey: KeyObject }> {
  sharedKey ??= promisify(generateKeyPair)('rsa', { modulusLength: 2048 });
  return sharedKey;
}

export async function startKubernetes(opts: KubernetesOptions = {}): Promise<KubernetesStandIn> {
  const objects = new ObjectStore();
  const faults = new Faults<KubernetesFault>();
  const calls: Call[] = [];
  const rbac = new Map(Object.entries(opts.rbac ?? {}));
  const apiAudiences = opts.apiAudiences ?? ['https://kubernetes.default.svc.cluster.local'];
  const issuer = opts.issuer ?? 'https://kubernetes.default.svc.cluster.local';
  const serviceCIDRApi = opts.serviceCIDRApi ?? true;
  const seats = opts.limits ? new Seats(opts.limits.concurrency) : undefined;
  const { privateKey, publicKey } = await signingKey();
  const kid = randomUUID();

  const cidrs = Array.isArray(opts.serviceCIDRs) ? { kubernetes: opts.serviceCIDRs } : (opts.serviceCIDRs ?? { kubernetes: ['10.96.0.0/12'] });
  for (const [name, list] of Object.entries(cidrs)) {
    objects.put({
      kind: 'ServiceCIDR',
      metadata: { name },
      spec: { cidrs: list },
      status: {
        conditions: [{ type: 'Ready', status: 'True', reason: '', message: 'Kubernetes Service CIDR is ready', lastTransitionTime: rfc3339(new Date()) }],
      },
    });
  }
  const firstCidr = Object.values(cidrs)[0]?.[0] ?? '10.96.0.0/12';
  const base = ipToBig(firstCidr.split('/')[0]!);
  objects.setService(
    'default',
    'kubernetes',
    {
      type: 'ClusterIP',
      clusterIP: bigToIp(base.n + 1n, base.v6),
      clusterIPs: [bigToIp(base.n + 1n, base.v6)],
      ports: [{ name: 'https', port: 443, protocol: 'TCP', targetPort: 6443 }],
    },
    { loadBalancer: {} },
    { component: 'apiserver', provider: 'kubernetes' },
  );
  for (const sa of opts.serviceAccounts ?? []) {
    const [namespace = '', name = ''] = sa.split('/');
    objects.addServiceAccount(namespace, name);
  }
  for (const o of opts.objects ?? []) objects.put(o);

  function mint(r: { namespace: string; serviceAccount: string; expirationSeconds?: number; audiences?: string[] }): MintedToken {
    const sa = objects.get('serviceaccounts', r.namespace, r.serviceAccount) ?? notFound('serviceaccounts', r.serviceAccount);
    const requested = r.expirationSeconds ?? 3600;
    const tr = (detail: string): never =>
      invalid('TokenRequest', 'authentication.k8s.io', r.serviceAccount, 'spec.expirationSeconds', String(requested), detail);
    if (requested < 600) tr('may not specify a duration less than 10 minutes');
    if (requested > 2 ** 32) tr('may not specify a duration larger than 2^32 seconds');
    let seconds = opts.maxTokenExpirationSeconds !== undefined ? Math.min(requested, opts.maxTokenExpirationSeconds) : requested;
    if (opts.tokenExpiration) seconds = opts.tokenExpiration(seconds);
    const audiences = r.audiences && r.audiences.length > 0 ? r.audiences : apiAudiences;
    const now = Math.floor(Date.now() / 1000);
    const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const unsigned = `${b64({ alg: 'RS256', kid })}.${b64({
      aud: audiences,
      exp: now + seconds,
      iat: now,
      iss: issuer,
      jti: randomUUID(),
      nbf: now,
      'kubernetes.io': { namespace: r.namespace, serviceaccount: { name: r.serviceAccount, uid: sa.metadata['uid'] } },
      sub: `system:serviceaccount:${r.namespace}:${r.serviceAccount}`,
    })}`;
    const token = `${unsigned}.${sign('sha256', Buffer.from(unsigned), privateKey).toString('base64url')}`;
    tokens.add(token, {
      user: `system:serviceaccount:${r.namespace}:${r.serviceAccount}`,
      groups: ['system:serviceaccounts', `system:serviceaccounts:${r.namespace}`, 'system:authenticated'],
      expiresAt: (now + seconds) * 1000,
      audiences,
      serviceAccount: { namespace: r.namespace, name: r.serviceAccount },
    });
    return { token, expirationTimestamp: new Date((now + seconds) * 1000), expirationSeconds: seconds, audiences };
  }
  const tokens = new TokenRegistry(mint);
  for (const [t, id] of Object.entries(opts.tokens ?? {})) tokens.add(t, id);

  function authenticate(req: IncomingMessage): KubeIdentity | undefined {
    const header = req.headers['authorization'];
    const unauthorized = (): never => statusError(401, 'Unauthorized', 'Unauthorized');
    if (header === undefined) return opts.anonymous ? { user: 'system:anonymous', groups: ['system:unauthenticated'] } : undefined;
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    const id = m ? tokens.lookup(m[1]!) : undefined;
    if (!id || (id.expiresAt !== undefined && id.expiresAt <= Date.now())) return unauthorized();
    if (id.audiences && !id.audiences.some((a) => apiAudiences.includes(a))) return unauthorized();
    if (id.serviceAccount && !objects.get('serviceaccounts', id.serviceAccount.namespace, id.serviceAccount.name)) return unauthorized();
    return id;
  }

  interface Target {
    verb: string;
    resource: string;
    subresource?: string;
    namespace?: string;
    name?: string;
  }

  function allowed(id: KubeIdentity, t: Target): boolean {
    const groups = id.groups ?? [];
    if (groups.includes('system:masters')) return true;
    const group = RESOURCES[t.resource]?.group ?? '';
    const full = t.subresource ? `${t.resource}/${t.subresource}` : t.resource;
    const rules = [id.user, ...groups].flatMap((s) => rbac.get(s) ?? []);
    return rules.some(
      (r) =>
        (r.verbs.includes('*') || r.verbs.includes(t.verb)) &&
        (r.apiGroups ?? ['*']).some((g) => g === '*' || g === group) &&
        r.resources.some((x) => x === '*' || x === full) &&
        (r.resourceNames === undefined || (t.name !== undefined && r.resourceNames.includes(t.name))) &&
        (r.namespaces === undefined || (t.namespace !== undefined && r.namespaces.includes(t.namespace))),
    );
  }

  function authorize(id: KubeIdentity, t: Target): void {
    if (allowed(id, t)) return;
    const group = RESOURCES[t.resource]?.group ?? '';
    const full = t.subresource ? `${t.resource}/${t.subresource}` : t.resource;
    const what = t.name === undefined ? qualified(t.resource) : `${qualified(t.resource)} "${t.name}"`;
    const scope = t.namespace === undefined ? 'at the cluster scope' : `in the namespace "${t.namespace}"`;
    statusError(403, 'Forbidden', `${what} is forbidden: User "${id.user}" cannot ${t.verb} resource "${full}" in API group "${group}" ${scope}`, {
      ...(t.name === undefined ? {} : { name: t.name }),
      ...(group === '' ? {} : { group }),
      kind: t.resource,
    });
  }

  /** Maps a URL to the verb/resource it addresses; undefined = no such path. */
  function parse(method: string, url: URL): Target | 'unknown-resource' | undefined {
    const m = /^\/(?:api\/v1|apis\/([^/]+)\/([^/]+))(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?(?:\/([^/]+))?\/?$/.exec(url.pathname);
    if (!m) return undefined;
    const [, group = '', version = 'v1', namespace, resource = '', name, subresource] = m;
    const known = ['', 'apps', 'networking.k8s.io', 'networking.istio.io', 'authentication.k8s.io', 'coordination.k8s.io'];
    if (!known.includes(group) || version !== 'v1') return undefined;
    const info = RESOURCES[resource];
    if (!info || info.group !== group || info.namespaced !== (namespace !== undefined) || (resource === 'servicecidrs' && !serviceCIDRApi))
      return 'unknown-resource';
    if (subresource !== undefined && !(resource === 'serviceaccounts' && subresource === 'token') && !(info.statusSubresource && subresource === 'status'))
      return 'unknown-resource';
    const verb = { GET: name === undefined ? 'list' : 'get', POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' }[method] ?? method.toLowerCase();
    const t: Target = { verb, resource };
    if (namespace !== undefined) t.namespace = namespace;
    if (name !== undefined) t.name = name;
    if (subresource !== undefined) t.subresource = subresource;
    return t;
  }

  function validateService(obj: KubeObject, dryRun: boolean): void {
    obj['spec'] ??= {};
    const spec = obj['spec'] as Record<string, unknown>;
    const name = obj.metadata.name;
    const ips = (Array.isArray(spec['clusterIPs']) ? spec['clusterIPs'] : spec['clusterIP'] ? [spec['clusterIP']] : []).map(String);
    if (ips.length === 0 || ips[0] === '') {
      if (dryRun) return;
      const taken = new Set(objects.list('services').map((s) => (s['spec'] as { clusterIP?: string }).clusterIP));
      for (let i = 10n; ; i++) {
        const ip = bigToIp(base.n + i, base.v6);
        if (!taken.has(ip)) {
          Object.assign(spec, { clusterIP: ip, clusterIPs: [ip], ipFamilies: [base.v6 ? 'IPv6' : 'IPv4'], ipFamilyPolicy: 'SingleStack' });
          return;
        }
      }
    }
    if (ips[0] === 'None') return;
    const shown = `[]string{${ips.map((i) => JSON.stringify(i)).join(', ')}}`;
    for (const [i, ip] of ips.entries()) {
      if (isIP(ip) === 0)
        invalid('Service', '', name, `spec.clusterIPs[${i}]`, JSON.stringify(ip), 'must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)');
      const family = isIP(ip) === 6 ? 'IPv6' : 'IPv4';
      const ranges = objects
        .list('servicecidrs')
        .flatMap((c) => (c['spec'] as { cidrs?: string[] }).cidrs ?? [])
        .filter((c) => (isIP(c.split('/')[0]!) === 6) === (family === 'IPv6'));
      if (ranges.length === 0) invalid('Service', '', name, 'spec.ipFamilies', `[]core.IPFamily{"${family}"}`, `${family} is not configured on this cluster`);
      const failAlloc = (detail: string): never => invalid('Service', '', name, 'spec.clusterIPs', shown, `failed to allocate IP ${ip}: ${detail}`);
      const notInRange = (cidr: string): string => `the provided IP (${ip}) is not in the valid range. The range of valid IPs is ${cidr}`;
      if (dryRun) {
        // Real servers check against one allocator only (v1.33 MetaAllocator.DryRun picks an arbitrary ServiceCIDR; the stand-in the first by name).
        if (!inCidr(ip, ranges[0]!)) failAlloc(notInRange(ranges[0]!));
        continue;
      }
      if (serviceCIDRApi && !ranges.some((c) => inCidr(ip, c))) failAlloc('the provided network does not match the current range');
      if (!serviceCIDRApi && !inCidr(ip, ranges[0]!)) failAlloc(notInRange(ranges[0]!));
      if (objects.list('services').some((s) => ((s['spec'] as { clusterIPs?: string[] }).clusterIPs ?? []).includes(ip))) {
        failAlloc('provided IP is already allocated');
      }
    }
    spec['clusterIP'] = ips[0];
    spec['clusterIPs'] = ips;
  }

  /** What a request says about who writes: the manager of managedFields (fieldManager, else the user agent's program). */
  interface Writer {
    manager: string;
    contentType: string;
    id: KubeIdentity;
  }

  /** A custom resource's spec as the API server keeps it (pruned, checked), or a 422 naming every invalid field. */
  function checkObject(info: ResourceInfo, obj: KubeObject, pruned: string[]): void {
    if (!info.spec || obj['spec'] === undefined) {
      if (info.spec?.type === 'object' && info.spec.required?.length && obj['spec'] === undefined)
        unprocessable(info, obj.metadata.name, ['spec: Required value']);
      return;
    }
    const errors: string[] = [];
    obj['spec'] = checkSchema(obj['spec'], info.spec, 'spec', errors, pruned);
    if (errors.length) unprocessable(info, obj.metadata.name, errors);
  }
  function unprocessable(info: ResourceInfo, name: string, errors: string[]): never {
    const qualifiedKind = info.group === '' ? info.kind : `${info.kind}.${info.group}`;
    const shown = errors.length === 1 ? errors[0]! : `[${errors.join(', ')}]`;
    return statusError(422, 'Invalid', `${qualifiedKind} "${name}" is invalid: ${shown}`, {
      name,
      ...(info.group === '' ? {} : { group: info.group }),
      kind: info.kind,
      causes: errors.map((e) => {
        const i = e.indexOf(': ');
        return { reason: e.includes('Required value') ? 'FieldValueRequired' : 'FieldValueInvalid', message: e.slice(i + 2), field: e.slice(0, i) };
      }),
    });
  }
  const conflict = (resource: string, name: string): never =>
    statusError(
      409,
      'Conflict',
      `Operation cannot be fulfilled on ${qualified(resource)} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
      { name, ...(RESOURCES[resource]?.group ? { group: RESOURCES[resource].group } : {}), kind: resource },
    );
  const alreadyExists = (resource: string, name: string): never =>
    statusError(409, 'AlreadyExists', `${qualified(resource)} "${name}" already exists`, {
      name,
      ...(RESOURCES[resource]?.group ? { group: RESOURCES[resource].group } : {}),
      kind: resource,
    });

  /** Stores `next` unless it equals what is stored (a no-op write keeps its resourceVersion, as etcd's guaranteed update does). */
  function commit(t: Target, existing: KubeObject | undefined, next: KubeObject, dryRun: boolean): KubeObject {
    const info = RESOURCES[t.resource]!;
    if (existing && isDeepStrictEqual(next, existing)) return existing;
    if (dryRun) {
      next.apiVersion = apiVersionOf(info);
      next.metadata = { ...next.metadata, uid: existing?.metadata['uid'] ?? randomUUID(), creationTimestamp: rfc3339(new Date()) };
      return next;
    }
    return objects.put(next);
  }

  function write(t: Target, method: string, url: URL, body: unknown, writer: Writer, pruned: string[]): [number, unknown] {
    const info = RESOURCES[t.resource]!;
    if (typeof body !== 'object' || body === null || typeof (body as KubeObject).metadata !== 'object') {
      return statusError(
        400,
        'BadRequest',
        'the body of the request was in an unknown format - accepted media types include: application/json, application/yaml',
      );
    }
    const obj = body as KubeObject;
    if (obj.kind !== undefined && obj.kind !== info.kind)
      return statusError(400, 'BadRequest', `the object provided is unrecognized (must be of type ${info.kind}): ${String(obj.kind)}`);
    obj.kind = info.kind;
    if (obj.metadata.namespace !== undefined && obj.metadata.namespace !== t.namespace) {
      return statusError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
    }
    if (t.namespace !== undefined) obj.metadata.namespace = t.namespace;
    const name = obj.metadata.name ?? '';
    if (name === '') return invalid(info.kind, info.group, '', 'metadata.name', '""', 'name or generateName is required');
    const dryRun = url.searchParams.get('dryRun') === 'All';
    const existing = objects.get(t.resource, t.namespace, name);
    if (t.subresource === 'status') {
      if (!existing) return notFound(t.resource, name);
      const rv = obj.metadata['resourceVersion'];
      if (rv !== undefined && rv !== existing.metadata['resourceVersion']) return conflict(t.resource, name);
      const next = { ...existing, status: obj['status'] };
      return [200, commit(t, existing, next, dryRun)];
    }
    if (method === 'POST' && existing) return alreadyExists(t.resource, name);
    if (method === 'PUT') {
      if (name !== t.name) return statusError(400, 'BadRequest', `the name of the object (${name}) does not match the name on the URL (${String(t.name)})`);
      if (!existing) return notFound(t.resource, name);
      const rv = obj.metadata['resourceVersion'];
      if (rv === undefined && info.group !== '') {
        return invalid(info.kind, info.group, name, 'metadata.resourceVersion', '0x0', 'must be specified for an update');
      }
      if (rv !== undefined && rv !== existing.metadata['resourceVersion']) return conflict(t.resource, name);
    }
    if (t.resource === 'services') validateService(obj, dryRun);
    checkObject(info, obj, pruned);
    // the status subresource owns status: a write to the object keeps the stored one (none on create)
    if (info.statusSubresource) {
      delete obj['status'];
      if (existing?.['status'] !== undefined) obj['status'] = existing['status'];
    }
    const next: KubeObject = { ...obj, metadata: { ...existing?.metadata, ...obj.metadata } };
    next.apiVersion = apiVersionOf(info);
    next.metadata['managedFields'] = recordUpdate(existing, next, writer.manager, apiVersionOf(info));
    if (existing && isDeepStrictEqual(stripVolatile(next), stripVolatile(existing))) return [200, existing];
    return [method === 'POST' ? 201 : 200, commit(t, existing, next, dryRun)];
  }

  /** PATCH: merge-patch+json (strategic merge reads as a merge patch for built-in kinds) and server-side apply. */
  function patch(t: Target, url: URL, body: unknown, writer: Writer, pruned: string[]): [number, unknown] {
    const info = RESOURCES[t.resource]!;
    const apply = writer.contentType === 'application/apply-patch+yaml';
    const merge = writer.contentType === 'application/merge-patch+json' || (writer.contentType === 'application/strategic-merge-patch+json' && !info.spec);
    if (!apply && !merge) {
      return statusError(
        415,
        'UnsupportedMediaType',
        `the body of the request was in an unknown format - accepted media types include: ${info.spec ? '' : 'application/strategic-merge-patch+json, '}application/merge-patch+json, application/apply-patch+yaml`,
      );
    }
    const options: string[] = [];
    const force = url.searchParams.get('force');
    const fieldManager = url.searchParams.get('fieldManager') ?? '';
    if (!apply && force !== null) options.push('force: Forbidden: may not be specified for non-apply patch');
    if (apply && fieldManager === '') options.push('fieldManager: Required value: is required for apply patch');
    if (fieldManager.length > 128) options.push(`fieldManager: Too long: may not be more than 128 bytes`);
    if (options.length)
      return statusError(422, 'Invalid', `PatchOptions.meta.k8s.io "" is invalid: ${options.length === 1 ? options[0] : `[${options.join(', ')}]`}`, {
        group: 'meta.k8s.io',
        kind: 'PatchOptions',
        causes: options.map((o) => ({ reason: 'FieldValueInvalid', message: o.slice(o.indexOf(': ') + 2), field: o.slice(0, o.indexOf(':')) })),
      });
    if (!isPlainObject(body)) return statusError(400, 'BadRequest', 'the body of the request was in an unknown format');
    const name = t.name!;
    const dryRun = url.searchParams.get('dryRun') === 'All';
    const existing = objects.get(t.resource, t.namespace, name);
    const meta = isPlainObject(body['metadata']) ? body['metadata'] : {};
    if (meta['name'] !== undefined && meta['name'] !== name)
      return statusError(400, 'BadRequest', `the name of the object (${String(meta['name'])}) does not match the name on the URL (${name})`);
    if (meta['namespace'] !== undefined && meta['namespace'] !== t.namespace)
      return statusError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
    if (meta['resourceVersion'] !== undefined && meta['resourceVersion'] !== existing?.metadata['resourceVersion']) return conflict(t.resource, name);

    if (t.subresource === 'status') {
      if (!existing) return notFound(t.resource, name);
      const next = { ...existing, status: apply ? body['status'] : mergePatch(existing['status'], body['status'] ?? {}) };
      return [200, commit(t, existing, next, dryRun)];
    }
    if (merge) {
      if (!existing) return notFound(t.resource, name);
      const merged = mergePatch(existing, body) as KubeObject;
      if (merged.kind !== info.kind || merged.apiVersion !== apiVersionOf(info))
        return statusError(400, 'BadRequest', `the object provided is unrecognized (must be of type ${info.kind})`);
      merged.metadata = { ...merged.metadata, name, ...(t.namespace === undefined ? {} : { namespace: t.namespace }) };
      checkObject(info, merged, pruned);
      if (info.statusSubresource) {
        delete merged['status'];
        if (existing['status'] !== undefined) merged['status'] = existing['status'];
      }
      merged.metadata['managedFields'] = recordUpdate(existing, merged, writer.manager, apiVersionOf(info));
      if (isDeepStrictEqual(stripVolatile(merged), stripVolatile(existing))) return [200, existing];
      return [200, commit(t, existing, merged, dryRun)];
    }

    // server-side apply: the applied configuration is what this manager owns, merged into the object
    if (body['kind'] !== info.kind || body['apiVersion'] !== apiVersionOf(info))
      return statusError(
        400,
        'BadRequest',
        `the object provided is unrecognized (must be of type ${info.kind} ${apiVersionOf(info)}): ${String(body['kind'])} ${String(body['apiVersion'])}`,
      );
    if (meta['managedFields'] !== undefined) return statusError(400, 'BadRequest', 'metadata.managedFields must be nil');
    const config = structuredClone(body) as KubeObject;
    config.metadata = { name, ...(t.namespace === undefined ? {} : { namespace: t.namespace }), ...meta };
    delete config['status'];
    checkObject(info, config, pruned);
    const applied = leafPaths(config);
    const entries = managersOf(existing);
    const mine = entries.find((e) => e.operation === 'Apply' && e.manager === fieldManager && !e.subresource);
    const conflicts: { manager: ManagedEntry; path: FieldPath }[] = [];
    for (const e of entries) {
      if (e === mine || e.subresource) continue;
      for (const owned of decodeFields(e.fieldsV1)) {
        const clash = applied.find((p) => overlaps(p, owned) && !isDeepStrictEqual(getAt(existing, p), getAt(config, p)));
        if (clash) conflicts.push({ manager: e, path: owned.length > clash.length ? owned : clash });
      }
    }
    if (conflicts.length && force !== 'true') return applyConflict(conflicts);
    for (const { manager, path } of conflicts) manager.fieldsV1 = encodeFields(decodeFields(manager.fieldsV1).filter((p) => !overlaps(p, path)));

    // an apply that creates is authorized as create too (the apiserver's createValidation), and its 403 carries RBAC's empty reason
    if (!existing && !allowed(writer.id, { ...t, verb: 'create' })) {
      return statusError(403, 'Forbidden', `${qualified(t.resource)} "${name}" is forbidden: `, {
        name,
        ...(info.group === '' ? {} : { group: info.group }),
        kind: t.resource,
      });
    }
    const next: KubeObject = existing
      ? structuredClone(existing)
      : { apiVersion: apiVersionOf(info), kind: info.kind, metadata: { name, ...(t.namespace === undefined ? {} : { namespace: t.namespace }) } };
    const others = entries.filter((e) => e !== mine && !e.subresource).flatMap((e) => decodeFields(e.fieldsV1));
    for (const dropped of decodeFields(mine?.fieldsV1 ?? {})) {
      if (applied.some((p) => overlaps(p, dropped)) || others.some((p) => overlaps(p, dropped))) continue;
      deleteAt(next, dropped);
    }
    for (const p of applied) setAt(next, p, getAt(config, p));
    checkObject(info, next, []);
    const stillOwned = entries.filter((e) => e !== mine && decodeFields(e.fieldsV1).length > 0);
    const unchanged = existing !== undefined && isDeepStrictEqual(stripVolatile(next), stripVolatile(existing));
    const entry: ManagedEntry = {
      manager: fieldManager,
      operation: 'Apply',
      apiVersion: apiVersionOf(info),
      time: unchanged && mine ? mine.time : rfc3339(new Date()),
      fieldsType: 'FieldsV1',
      fieldsV1: encodeFields(applied),
    };
    next.metadata['managedFields'] = mine
      ? entries.map((e) => (e === mine ? entry : e)).filter((e) => e === entry || stillOwned.includes(e))
      : [...stillOwned, entry];
    return [existing ? 200 : 201, commit(t, existing, next, dryRun)];
  }

  function applyConflict(conflicts: { manager: ManagedEntry; path: FieldPath }[]): never {
    const who = (e: ManagedEntry) => (e.operation === 'Update' ? `"${e.manager}" using ${e.apiVersion}` : `"${e.manager}"`);
    const message =
      conflicts.length === 1
        ? `Apply failed with 1 conflict: conflict with ${who(conflicts[0]!.manager)}: ${showPath(conflicts[0]!.path)}`
        : `Apply failed with ${conflicts.length} conflicts: ${[...new Set(conflicts.map((c) => who(c.manager)))]
            .sort()
            .flatMap((m) => [`conflicts with ${m}:`, ...conflicts.filter((c) => who(c.manager) === m).map((c) => `- ${showPath(c.path)}`)])
            .join('\n')}`;
    return statusError(409, 'Conflict', message, {
      causes: conflicts.map((c) => ({ reason: 'FieldManagerConflict', message: `conflict with ${who(c.manager)}`, field: showPath(c.path) })),
    });
  }

  function route(t: Target, method: string, url: URL, body: unknown, writer: Writer, pruned: string[]): [number, unknown] {
    const info = RESOURCES[t.resource]!;
    if (t.subresource === 'token') {
      if (method !== 'POST') return statusError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
      const spec = ((body as { spec?: Record<string, unknown> } | null)?.spec ?? {}) as {
        audiences?: string[];
        expirationSeconds?: number;
        boundObjectRef?: unknown;
      };
      const minted = mint({
        namespace: t.namespace!,
        serviceAccount: t.name!,
        expirationSeconds: spec.expirationSeconds ?? 3600,
        audiences: spec.audiences ?? [],
      });
      return [
        201,
        {
          kind: 'TokenRequest',
          apiVersion: 'authentication.k8s.io/v1',
          metadata: { name: t.name, namespace: t.namespace, creationTimestamp: null },
          spec: { audiences: minted.audiences, expirationSeconds: minted.expirationSeconds, boundObjectRef: spec.boundObjectRef ?? null },
          status: { token: minted.token, expirationTimestamp: rfc3339(minted.expirationTimestamp) },
        },
      ];
    }
    if (t.subresource === 'status' && !['GET', 'PUT', 'PATCH'].includes(method))
      return statusError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    if (t.verb === 'get') return [200, { kind: info.kind, ...(objects.get(t.resource, t.namespace, t.name!) ?? notFound(t.resource, t.name!)) }];
    if (t.verb === 'list') {
      const selector = (url.searchParams.get('labelSelector') ?? '')
        .split(',')
        .filter(Boolean)
        .map((s) => s.split('=').filter(Boolean));
      const items = objects
        .list(t.resource, t.namespace)
        .filter((o) => selector.every(([k = '', v]) => ((o.metadata['labels'] ?? {}) as Record<string, string>)[k] === v))
        .map((o) => {
          if (info.group === 'networking.istio.io') return o; // custom resources keep kind/apiVersion in lists
          const { apiVersion: _a, kind: _k, ...rest } = o;
          return rest;
        });
      return [200, { kind: `${info.kind}List`, apiVersion: apiVersionOf(info), metadata: { resourceVersion: objects.resourceVersion }, items }];
    }
    if (t.verb === 'create' || t.verb === 'update') return write(t, method, url, body, writer, pruned);
    if (t.verb === 'patch' && t.name !== undefined) return patch(t, url, body, writer, pruned);
    if (t.verb === 'delete' && t.subresource === undefined) {
      const existing = objects.get(t.resource, t.namespace, t.name!) ?? notFound(t.resource, t.name!);
      objects.delete(t.resource, t.namespace, t.name!);
      return [
        200,
        {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Success',
          details: { name: t.name, ...(info.group ? { group: info.group } : {}), kind: t.resource, uid: existing.metadata['uid'] },
        },
      ];
    }
    return statusError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
  }

  async function handle(req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://kubernetes');
    const method = req.method ?? 'GET';
    const call = recordCall(calls, req, res, url);
    const target = parse(method, url);
    if (typeof target === 'object') call.action = `${target.verb} ${target.resource}${target.subresource ? `/${target.subresource}` : ''}`;
    const { delayMs, fault } = faults.take(call.action === undefined ? { method, path: url.pathname } : { method, path: url.pathname, action: call.action });
    if (!(await delay(delayMs, signal))) return;
    if (fault) call.fault = fault.kind;
    if (fault?.kind === 'reset') return resetConnection(res);
    if (fault?.kind === 'status') {
      const code = fault.status ?? 500;
      const reason = code === 503 ? 'ServiceUnavailable' : code === 504 ? 'Timeout' : 'InternalError';
      return sendJson(res, code, statusObject(code, reason, 'Internal error occurred: injected fault', { causes: [{ message: 'injected fault' }] }));
    }
    if (fault?.kind === 'throttle') {
      const after = fault.retryAfter ?? 1;
      return sendJson(res, 429, statusObject(429, 'TooManyRequests', 'Too many requests, please try again later.', { retryAfterSeconds: after }), {
        'retry-after': String(after),
      });
    }
    if (seats) {
      const release = seats.take();
      if (!release) {
        call.limited = true;
        const after = opts.limits?.retryAfterSeconds ?? 1;
        return sendJson(res, 429, statusObject(429, 'TooManyRequests', 'Too many requests, please try again later.', { retryAfterSeconds: after }), {
          'retry-after': String(after),
        });
      }
      res.once('close', release);
      if (!(await delay(opts.limits?.serviceMs ?? 0, signal))) return;
    }
    if (fault?.kind === 'expire-token') tokens.expire(/^Bearer\s+(\S+)$/i.exec(String(req.headers['authorization'] ?? ''))?.[1] ?? '');
    try {
      const raw = (await readBody(req)).toString('utf8');
      const id = authenticate(req);
      if (url.pathname === '/version' && method === 'GET') {
        const v = /^v(\d+)\.(\d+)/.exec(opts.gitVersion ?? 'v1.33.1');
        return sendJson(res, 200, { major: v?.[1] ?? '1', minor: v?.[2] ?? '33', gitVersion: opts.gitVersion ?? 'v1.33.1', platform: 'linux/amd64' });
      }
      if (!id) return statusError(401, 'Unauthorized', 'Unauthorized');
      if (target === undefined) throw new KubeError(404, '404 page not found\n');
      if (target === 'unknown-resource') return statusError(404, 'NotFound', 'the server could not find the requested resource', {});
      authorize(id, target);
      const contentType = String(req.headers['content-type'] ?? '')
        .split(';')[0]!
        .trim()
        .toLowerCase();
      let body: unknown;
      if (raw.trim() !== '') {
        try {
          body = method === 'PATCH' && contentType === 'application/apply-patch+yaml' ? parseYaml(raw) : JSON.parse(raw);
        } catch (err) {
          return statusError(400, 'BadRequest', `error decoding request body: ${String(err)}`);
        }
      }
      const agent = String(req.headers['user-agent'] ?? '').split('/')[0]!;
      const writer: Writer = { manager: url.searchParams.get('fieldManager') || agent || 'unknown', contentType, id };
      const pruned: string[] = [];
      const [status, out] = route(target, method, url, body, writer, pruned);
      // as the API server warns of fields a CRD's schema does not know (and drops them)
      const warnings = pruned.map((f) => `299 - "unknown field \\"${f}\\""`).join(', ');
      sendJson(res, status, out, warnings ? { warning: warnings } : {});
    } catch (err) {
      if (!(err instanceof KubeError)) throw err;
      if (typeof err.body === 'string') {
        res.writeHead(err.status, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' }).end(err.body);
        return;
      }
      sendJson(res, err.status, err.body);
    }
  }

  const tls = opts.tls ?? true;
  const server = await listen(handle, opts.port === undefined ? { tls } : { tls, port: opts.port });
  return {
    url: server.url,
    port: server.port,
    caPem: server.caPem ?? '',
    faults,
    calls,
    tokens,
    objects,
    rbac,
    serviceAccountPublicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    stop: () => server.stop(),
  };
}
