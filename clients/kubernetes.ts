// The Kubernetes API client of a run, configured from what Vault returned (server, CA, scoped token): the reads a mesh VM needs.
import { CoreV1Api, CustomObjectsApi, KubeConfig, NetworkingV1Api, ServerConfiguration, createConfiguration } from '@kubernetes/client-node';
import type { RequestContext, ResponseContext } from '@kubernetes/client-node';
import { apiCalls } from '../engine/api-calls.ts';
import { secrets } from '../engine/secrets.ts';
import { DEFAULT_RETRY, RetriesExhausted, withRetry, type RetryPolicy } from './retry.ts';
import { KubernetesError, classifyKubernetes, explainKubernetesError, httpStatus } from './kubernetes-errors.ts';
import { findServiceCidrs, type ServiceCidrs } from './service-cidr.ts';
import { upsertWorkloadEntry, type WorkloadEntryInput } from './workload-entry.ts';

export { KubernetesError } from './kubernetes-errors.ts';
export type { ServiceCidrs } from './service-cidr.ts';
export type { WorkloadEntryInput } from './workload-entry.ts';

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
  readonly #kubeConfig = new KubeConfig();
  readonly core: CoreV1Api;
  readonly networking: NetworkingV1Api;
  readonly custom: CustomObjectsApi;
  #refreshed = false;

  constructor(options: KubernetesClientOptions) {
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
        if (httpStatus(cause) === 401 && this.#options.refreshToken && !this.#refreshed) {
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
    return pem;
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
    return { rootCert: field('root-cert.pem'), certChain: field('cert-chain.pem'), key };
  }

  /** Every service range: the ServiceCIDR API, else a dry-run probe whose error names the range, else `fallback`. */
  serviceCidrs(options: { probeNamespace?: string; fallback?: readonly string[] } = {}): Promise<ServiceCidrs> {
    return findServiceCidrs(this, options);
  }

  /** Addresses of the LoadBalancer Services in a namespace (hostname first, then IP), sorted by service name. */
  async controlPlaneAddresses(options: { namespace?: string; labelSelector?: string; services?: readonly string[] } = {}): Promise<ControlPlaneAddress[]> {
    const namespace = options.namespace ?? 'istio-system';
    const list = await this.call(`listing Services in namespace ${namespace}`, () =>
      this.core.listNamespacedService({ namespace, ...(options.labelSelector ? { labelSelector: options.labelSelector } : {}) }),
    );
    const out: ControlPlaneAddress[] = [];
    for (const svc of list.items) {
      const name = svc.metadata?.name ?? '';
      if (svc.spec?.type !== 'LoadBalancer' || (options.services && !options.services.includes(name))) continue;
      const ingress = svc.status?.loadBalancer?.ingress ?? [];
      const hostname = ingress.find((i) => i.hostname)?.hostname;
      const ip = ingress.find((i) => i.ip)?.ip;
      if (!hostname && !ip) continue;
      const ports = (svc.spec.ports ?? []).map((p) => (p.name ? { name: p.name, port: p.port } : { port: p.port }));
      out.push({ service: name, namespace, address: (hostname ?? ip)!, kind: hostname ? 'hostname' : 'ip', ports });
    }
    for (const wanted of options.services ?? []) {
      if (!out.some((a) => a.service === wanted))
        throw new Error(`Service ${namespace}/${wanted} is not a LoadBalancer with an address yet (status.loadBalancer.ingress is empty)`);
    }
    return out.sort((a, b) => a.service.localeCompare(b.service));
  }

  /** The ClusterIP of the cluster DNS Service (kube-system/kube-dns by default). */
  async clusterDns(options: { namespace?: string; service?: string } = {}): Promise<string> {
    const namespace = options.namespace ?? 'kube-system';
    const name = options.service ?? 'kube-dns';
    const svc = await this.call(`reading Service ${namespace}/${name}`, () => this.core.readNamespacedService({ name, namespace }));
    const ip = svc.spec?.clusterIP;
    if (!ip || ip === 'None') throw new Error(`Service ${namespace}/${name} has no ClusterIP`);
    return ip;
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
    return { token, expiresAt: new Date(expires), audiences: response.spec?.audiences ?? audiences };
  }

  /** Registers this VM as a WorkloadEntry (networking.istio.io/v1): created, replaced only when spec or labels differ. */
  upsertWorkloadEntry(entry: WorkloadEntryInput): Promise<'created' | 'updated' | 'unchanged'> {
    return upsertWorkloadEntry(this, entry);
  }

  async close(): Promise<void> {}
}
