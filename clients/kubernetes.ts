// The Kubernetes API client of a run, configured from what Vault returned (server, CA, scoped token): the reads a mesh VM needs, each value checked before use.
import './no-debug.ts'; // before the libraries that would print requests
import { AppsV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, NetworkingV1Api, ServerConfiguration, createConfiguration } from '@kubernetes/client-node';
import type { Cluster as KubeCluster, RequestContext, ResponseContext } from '@kubernetes/client-node';
import type { AgentOptions } from 'node:https';
import { apiCalls } from '../engine/api-calls.ts';
import { secrets } from '../engine/secrets.ts';
import { DEFAULT_RETRY, RetriesExhausted, withRetry, type RetryPolicy } from './retry.ts';
import { KubernetesError, classifyKubernetes, explainKubernetesError, httpStatus } from './kubernetes-errors.ts';
import { findServiceCidrs, type ServiceCidrs } from './service-cidr.ts';
import { refuseInsecureTlsEnvironment } from './tls.ts';
import { upsertWorkloadEntry, type WorkloadEntryInput } from './workload-entry.ts';
import { z } from 'zod';
import { cidr, ClusterValueError, dnsName, ipAddress, parseClusterValue, pemCertificates, port as portNumber } from './cluster-values.ts';
import type { KeptRead } from './kept-inputs.ts';
import {
  readInjectorValues,
  readIstiodVersion,
  readMeshConfig,
  readNamespaceNetwork,
  readWorkloadGroup,
  type ControlPlane,
  type InjectorValues,
  type MeshConfig,
  type WorkloadGroup,
} from './istio-config.ts';

export { KubernetesError } from './kubernetes-errors.ts';
export { ClusterValueError } from './cluster-values.ts';
export type { ServiceCidrs } from './service-cidr.ts';
export type { WorkloadEntryInput } from './workload-entry.ts';
export type { ControlPlane, InjectorValues, MeshConfig, ProxyConfig, Probe, WorkloadGroup } from './istio-config.ts';

export interface KubernetesClientOptions {
  /** API server URL, e.g. https://1.2.3.4:6443 (from Vault). */
  server: string;
  /** PEM of the cluster CA (from Vault). */
  caPem: string;
  /** A scoped service-account bearer token (from Vault). */
  token: string;
  /** Per request (default 10). */
  timeoutSeconds?: number;
  retry?: RetryPolicy;
  /** Called once when the API answers 401 (the token expired mid-run): returns a fresh token (e.g. from Vault). */
  refreshToken?: () => Promise<string>;
  /** Also refresh once on 403 (kept access from an earlier run whose rights may have changed). */
  refreshOnForbidden?: boolean;
  /** Where NODE_TLS_REJECT_UNAUTHORIZED (refused when "0") is looked up. Default process.env. */
  env?: Record<string, string | undefined>;
}

/** Certificate checks always on: the library leaves rejectUnauthorized unset (so Node's NODE_TLS_REJECT_UNAUTHORIZED decides); this sets it. */
class VerifyingKubeConfig extends KubeConfig {
  override createDispatcherOptions(cluster: KubeCluster | null, agentOptions: AgentOptions): ReturnType<KubeConfig['createDispatcherOptions']> {
    return super.createDispatcherOptions(cluster, { ...agentOptions, rejectUnauthorized: true });
  }
}

export interface IstioCerts {
  rootCert: string;
  certChain: string;
  /** Registered as a secret. */
  key: string;
}

export interface ControlPlaneAddress {
  service: string;
  namespace: string;
  /** The LoadBalancer's hostname if it has one (AWS ELB), else its IP. */
  address: string;
  kind: 'hostname' | 'ip';
  ports: { name?: string; port: number }[];
}

export interface ServiceAccountToken {
  token: string;
  /** status.expirationTimestamp: what the issuer granted, which may differ from what was asked. */
  expiresAt: Date;
  audiences: string[];
}

export class KubernetesClient {
  readonly server: string;
  readonly #options: KubernetesClientOptions;
  readonly #kubeConfig = new VerifyingKubeConfig();
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;
  readonly networking: NetworkingV1Api;
  readonly custom: CustomObjectsApi;
  #refreshed = false;
  /** The Services lists read, by namespace and selector: certs (istiod's gateway) and dns/aws (the control-plane names) share one read. */
  readonly #serviceLists = new Map<string, Promise<ListedService[]>>();

  constructor(options: KubernetesClientOptions) {
    refuseInsecureTlsEnvironment('the Kubernetes API', options.env);
    this.server = options.server;
    this.#options = options;
    this.#useToken(options.token);
    const timeoutMs = (options.timeoutSeconds ?? 10) * 1000;
    const config = createConfiguration({
      baseServer: new ServerConfiguration(options.server.replace(/\/+$/, ''), {}),
      authMethods: { default: this.#kubeConfig },
      promiseMiddleware: [
        {
          pre: async (context: RequestContext) => {
            apiCalls.count('kubernetes');
            context.setSignal(AbortSignal.timeout(timeoutMs));
            return context;
          },
          post: async (context: ResponseContext) => context,
        },
      ],
    });
    this.core = new CoreV1Api(config);
    this.apps = new AppsV1Api(config);
    this.networking = new NetworkingV1Api(config);
    this.custom = new CustomObjectsApi(config);
  }

  /** One API request with bounded retries, one token refresh on 401, and an error that names the fix. */
  async call<T>(what: string, request: () => Promise<T>): Promise<T> {
    for (;;) {
      try {
        return await withRetry(what, this.#options.retry ?? DEFAULT_RETRY, classifyKubernetes, request);
      } catch (error) {
        const cause = error instanceof RetriesExhausted ? error.cause : error;
        const refused = httpStatus(cause) === 401 || (httpStatus(cause) === 403 && this.#options.refreshOnForbidden);
        if (refused && this.#options.refreshToken && !this.#refreshed) {
          this.#refreshed = true;
          this.#useToken(await this.#options.refreshToken());
          continue;
        }
        const note = error instanceof RetriesExhausted ? ` (after ${error.attempts} attempts)` : '';
        throw new KubernetesError(explainKubernetesError(cause, what, this.server) + note, httpStatus(cause), cause);
      }
    }
  }

  #useToken(token: string): void {
    secrets.add(token);
    this.#kubeConfig.loadFromOptions({
      clusters: [{ name: 'meshvm', server: this.server, caData: Buffer.from(this.#options.caPem).toString('base64'), skipTLSVerify: false }],
      users: [{ name: 'meshvm', token }],
      contexts: [{ name: 'meshvm', cluster: 'meshvm', user: 'meshvm' }],
      currentContext: 'meshvm',
    });
  }

  /** root-cert.pem of the istio-ca-root-cert ConfigMap istiod writes in every namespace. */
  async rootCert(namespace: string, configMap = 'istio-ca-root-cert'): Promise<string> {
    const cm = await this.call(`reading ConfigMap ${namespace}/${configMap}`, () => this.core.readNamespacedConfigMap({ name: configMap, namespace }));
    const pem = cm.data?.['root-cert.pem'];
    if (!pem) throw new Error(`ConfigMap ${namespace}/${configMap} has no root-cert.pem (is istiod running and watching namespace ${namespace}?)`);
    return parseClusterValue(pemCertificates, pem, `ConfigMap ${namespace}/${configMap}`, 'data."root-cert.pem"');
  }

  /** The classic istio.<serviceaccount> Secret: root-cert.pem, cert-chain.pem and key.pem, base64-decoded. */
  async istioSecret(namespace: string, serviceAccount: string): Promise<IstioCerts> {
    const name = `istio.${serviceAccount}`;
    const secret = await this.call(`reading Secret ${namespace}/${name}`, () => this.core.readNamespacedSecret({ name, namespace }));
    const field = (key: string): string => {
      const value = secret.data?.[key];
      if (!value) throw new Error(`Secret ${namespace}/${name} has no ${key}`);
      return Buffer.from(value, 'base64').toString('utf8');
    };
    const key = field('key.pem');
    secrets.add(key);
    if (!/^-----BEGIN [A-Z ]*PRIVATE KEY-----\n[\s\S]+\n-----END [A-Z ]*PRIVATE KEY-----\s*$/.test(key))
      throw new Error(`Secret ${namespace}/${name}: data."key.pem" is not a PEM private key (one -----BEGIN ... PRIVATE KEY----- block)`);
    const object = `Secret ${namespace}/${name}`;
    return {
      rootCert: parseClusterValue(pemCertificates, field('root-cert.pem'), object, 'data."root-cert.pem"'),
      certChain: parseClusterValue(pemCertificates, field('cert-chain.pem'), object, 'data."cert-chain.pem"'),
      key,
    };
  }

  /** Every service range: the ServiceCIDR API, else a dry-run probe whose error names the range, else `fallback`. */
  async serviceCidrs(options: { probeNamespace?: string; fallback?: readonly string[] } = {}): Promise<ServiceCidrs> {
    const read = serviceCidrsRead(options);
    return read.parse(await read.fetch(this));
  }

  /**
   * Addresses of the LoadBalancer Services in a namespace (hostname first, then IP), sorted by service name. The list is
   * read once per client (one per run): whichever services each caller wants, they are picked from the same read.
   */
  async controlPlaneAddresses(options: { namespace?: string; labelSelector?: string; services?: readonly string[] } = {}): Promise<ControlPlaneAddress[]> {
    const read = controlPlaneRead(options);
    return read.parse(await read.fetch(this));
  }

  /** The Services of a namespace as controlPlaneAddresses needs them (name, type, load-balancer ingress, ports): one LIST per client. */
  serviceList(namespace: string, labelSelector = ''): Promise<ListedService[]> {
    const key = JSON.stringify([namespace, labelSelector]);
    let listed = this.#serviceLists.get(key);
    if (!listed) {
      listed = this.call(`listing Services in namespace ${namespace}`, () =>
        this.core.listNamespacedService({ namespace, ...(labelSelector ? { labelSelector } : {}) }),
      ).then((list) =>
        list.items.map((svc) => ({
          name: svc.metadata?.name ?? '',
          ...(svc.spec?.type !== undefined && { type: svc.spec.type }),
          ingress: (svc.status?.loadBalancer?.ingress ?? []).map((i) => ({ ...(i.hostname && { hostname: i.hostname }), ...(i.ip && { ip: i.ip }) })),
          ports: (svc.spec?.ports ?? []).map((p) => ({ ...(p.name && { name: p.name }), port: p.port })),
        })),
      );
      this.#serviceLists.set(key, listed);
    }
    return listed;
  }

  /** The ClusterIP of the cluster DNS Service (kube-system/kube-dns by default). */
  async clusterDns(options: { namespace?: string; service?: string } = {}): Promise<string> {
    const namespace = options.namespace ?? 'kube-system';
    const name = options.service ?? 'kube-dns';
    const svc = await this.call(`reading Service ${namespace}/${name}`, () => this.core.readNamespacedService({ name, namespace }));
    const ip = svc.spec?.clusterIP;
    if (!ip || ip === 'None') throw new Error(`Service ${namespace}/${name} has no ClusterIP`);
    return parseClusterValue(ipAddress, ip, `Service ${namespace}/${name}`, 'spec.clusterIP');
  }

  /** A TokenRequest for a service account (audience istio-ca, at least 600 s); the expiry is what the response says. */
  async requestToken(o: {
    namespace: string;
    serviceAccount: string;
    audiences?: readonly string[];
    expirationSeconds?: number;
  }): Promise<ServiceAccountToken> {
    const expirationSeconds = o.expirationSeconds ?? 3600;
    if (expirationSeconds < 600) throw new RangeError(`a TokenRequest must ask for at least 600 seconds (asked ${expirationSeconds})`);
    const audiences = [...(o.audiences ?? ['istio-ca'])];
    const response = await this.call(`requesting a token for ServiceAccount ${o.namespace}/${o.serviceAccount}`, () =>
      this.core.createNamespacedServiceAccountToken({
        name: o.serviceAccount,
        namespace: o.namespace,
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences, expirationSeconds } },
      }),
    );
    const token = response.status?.token;
    const expires = response.status?.expirationTimestamp;
    if (!token || !expires) throw new Error(`the TokenRequest for ${o.namespace}/${o.serviceAccount} returned no token or expiry`);
    secrets.add(token);
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token))
      throw new Error(`the TokenRequest for ${o.namespace}/${o.serviceAccount}: status.token is not a JWT (three base64url parts)`);
    return { token, expiresAt: new Date(expires), audiences: response.spec?.audiences ?? audiences };
  }

  /** Registers this VM as a WorkloadEntry (networking.istio.io/v1): created, replaced only when spec or labels differ. */
  upsertWorkloadEntry(entry: WorkloadEntryInput): Promise<'created' | 'updated' | 'unchanged'> {
    return upsertWorkloadEntry(this, entry);
  }

  /** The mesh config of a control plane (ConfigMap istio[-<rev>], key mesh), typed; an error when it does not exist. */
  meshConfig(cp: ControlPlane): Promise<MeshConfig> {
    return readMeshConfig(this, cp);
  }

  /** The injector's values (cluster name, network, mesh ID), or undefined when there is no injector ConfigMap. */
  injectorValues(cp: ControlPlane): Promise<InjectorValues | undefined> {
    return readInjectorValues(this, cp);
  }

  /** The topology.istio.io/network label of a namespace (the system namespace's names the cluster's network). */
  namespaceNetwork(namespace: string): Promise<string | undefined> {
    return readNamespaceNetwork(this, namespace);
  }

  /** A WorkloadGroup, typed, or undefined when it does not exist. */
  workloadGroup(namespace: string, name: string): Promise<WorkloadGroup | undefined> {
    return readWorkloadGroup(this, namespace, name);
  }

  /**
   * istiod's version from its Deployment istiod[-<rev>]: the discovery container's image tag, else the label
   * app.kubernetes.io/version (or operator.istio.io/version); undefined when there is no Deployment or no version.
   */
  istiodVersion(cp: ControlPlane): Promise<string | undefined> {
    return readIstiodVersion(this, cp);
  }

  async close(): Promise<void> {}
}

/** A Service as a LIST of a namespace gives it, reduced to what the control plane's addresses are read from (kept between runs as is). */
export interface ListedService {
  name: string;
  type?: string;
  ingress: { hostname?: string; ip?: string }[];
  ports: { name?: string; port: number }[];
}

const listedServices = z.array(
  z.object({
    name: z.string(),
    type: z.string().optional(),
    ingress: z.array(z.object({ hostname: z.string().optional(), ip: z.string().optional() })),
    ports: z.array(z.object({ name: z.string().optional(), port: z.unknown() })),
  }),
);

/** The control plane's addresses as kept between runs: the namespace's Services listed (fetch), picked and checked by parse. */
export function controlPlaneRead(options: { namespace?: string; labelSelector?: string; services?: readonly string[] } = {}): KeptRead<ControlPlaneAddress[]> {
  const namespace = options.namespace ?? 'istio-system';
  return {
    fetch: (k) => k.serviceList(namespace, options.labelSelector),
    parse: (raw) => controlPlaneAddressesOf(raw, namespace, options.services),
  };
}

function controlPlaneAddressesOf(raw: unknown, namespace: string, services: readonly string[] | undefined): ControlPlaneAddress[] {
  const checked = listedServices.safeParse(raw);
  if (!checked.success) throw new ClusterValueError(`the Services of namespace ${namespace}`, 'items', raw, 'a list of Services');
  const list = checked.data;
  const out: ControlPlaneAddress[] = [];
  for (const svc of list) {
    const name = svc.name;
    if (svc.type !== 'LoadBalancer' || (services && !services.includes(name))) continue;
    const object = `Service ${namespace}/${name}`;
    const hostnameAt = svc.ingress.findIndex((i) => i.hostname);
    const ipAt = svc.ingress.findIndex((i) => i.ip);
    if (hostnameAt < 0 && ipAt < 0) continue;
    const address =
      hostnameAt >= 0
        ? parseClusterValue(dnsName, svc.ingress[hostnameAt]!.hostname, object, `status.loadBalancer.ingress[${hostnameAt}].hostname`)
        : parseClusterValue(ipAddress, svc.ingress[ipAt]!.ip, object, `status.loadBalancer.ingress[${ipAt}].ip`);
    const ports = svc.ports.map((p, i) => {
      const port = parseClusterValue(portNumber, p.port, object, `spec.ports[${i}].port`);
      return p.name ? { name: p.name, port } : { port };
    });
    out.push({ service: name, namespace, address, kind: hostnameAt >= 0 ? 'hostname' : 'ip', ports });
  }
  for (const wanted of services ?? []) {
    if (out.some((a) => a.service === wanted)) continue;
    if (!list.some((svc) => svc.name === wanted)) throw new MissingServiceError(namespace, wanted);
    throw new Error(`Service ${namespace}/${wanted} is not a LoadBalancer with an address yet (status.loadBalancer.ingress is empty)`);
  }
  return out.sort((a, b) => a.service.localeCompare(b.service));
}

const serviceCidrsShape = z.object({
  cidrs: z.array(z.string()).min(1),
  source: z.enum(['servicecidr-api', 'dry-run-probe', 'attribute']),
  notes: z.array(z.string()),
});

/** The service ranges as kept between runs: what findServiceCidrs found (fetch), each range checked by parse. */
export function serviceCidrsRead(options: { probeNamespace?: string; fallback?: readonly string[] } = {}): KeptRead<ServiceCidrs> {
  return {
    fetch: (k) => findServiceCidrs(k, options),
    parse(raw) {
      const checked = serviceCidrsShape.safeParse(raw);
      if (!checked.success) throw new ClusterValueError("the cluster's service ranges", 'cidrs', raw, 'a list of ranges and where they were found');
      const found = checked.data;
      const where = { 'servicecidr-api': 'ServiceCIDRs (networking.k8s.io/v1)', 'dry-run-probe': "the dry-run probe's refusal", attribute: 'the fallback' }[
        found.source
      ];
      for (const [i, value] of found.cidrs.entries()) parseClusterValue(cidr, value, where, found.source === 'servicecidr-api' ? `spec.cidrs[${i}]` : 'range');
      return found;
    },
  };
}

/** A control-plane Service the cluster does not have at all (not merely one without an address yet). */
export class MissingServiceError extends Error {
  readonly namespace: string;
  readonly service: string;
  constructor(namespace: string, service: string) {
    super(`no Service ${service} in ${namespace}`);
    this.name = 'MissingServiceError';
    this.namespace = namespace;
    this.service = service;
  }
}
