// Kubernetes API server v1.33 (core/v1, networking.k8s.io/v1 ServiceCIDR, authentication.k8s.io/v1 TokenRequest, networking.istio.io/v1 WorkloadEntry) with bearer tokens and RBAC.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { generateKeyPair, randomUUID, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import { delay, Faults, listen, readBody, recordCall, resetConnection, sendJson } from './common.ts';
import type { Call, CommonFault } from './common.ts';

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
}
const RESOURCES: Record<string, ResourceInfo> = {
  configmaps: { group: '', version: 'v1', kind: 'ConfigMap', namespaced: true },
  secrets: { group: '', version: 'v1', kind: 'Secret', namespaced: true },
  services: { group: '', version: 'v1', kind: 'Service', namespaced: true },
  serviceaccounts: { group: '', version: 'v1', kind: 'ServiceAccount', namespaced: true },
  servicecidrs: { group: 'networking.k8s.io', version: 'v1', kind: 'ServiceCIDR', namespaced: false },
  workloadentries: { group: 'networking.istio.io', version: 'v1', kind: 'WorkloadEntry', namespaced: true },
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
      ...(info.group === '' ? {} : { generation: Number(old?.metadata['generation'] ?? 0) + 1 }),
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

  function authorize(id: KubeIdentity, t: Target): void {
    const groups = id.groups ?? [];
    if (groups.includes('system:masters')) return;
    const group = RESOURCES[t.resource]?.group ?? '';
    const full = t.subresource ? `${t.resource}/${t.subresource}` : t.resource;
    const rules = [id.user, ...groups].flatMap((s) => rbac.get(s) ?? []);
    const ok = rules.some(
      (r) =>
        (r.verbs.includes('*') || r.verbs.includes(t.verb)) &&
        (r.apiGroups ?? ['*']).some((g) => g === '*' || g === group) &&
        r.resources.some((x) => x === '*' || x === full) &&
        (r.resourceNames === undefined || (t.name !== undefined && r.resourceNames.includes(t.name))) &&
        (r.namespaces === undefined || (t.namespace !== undefined && r.namespaces.includes(t.namespace))),
    );
    if (ok) return;
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
    const known = ['', 'networking.k8s.io', 'networking.istio.io', 'authentication.k8s.io'];
    if (!known.includes(group) || version !== 'v1') return undefined;
    const info = RESOURCES[resource];
    if (!info || info.group !== group || info.namespaced !== (namespace !== undefined) || (resource === 'servicecidrs' && !serviceCIDRApi))
      return 'unknown-resource';
    if (subresource !== undefined && !(resource === 'serviceaccounts' && subresource === 'token')) return 'unknown-resource';
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

  function write(t: Target, method: string, url: URL, body: unknown): [number, unknown] {
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
    if (method === 'POST' && existing) {
      return statusError(409, 'AlreadyExists', `${qualified(t.resource)} "${name}" already exists`, {
        name,
        ...(info.group ? { group: info.group } : {}),
        kind: t.resource,
      });
    }
    if (method === 'PUT') {
      if (name !== t.name) return statusError(400, 'BadRequest', `the name of the object (${name}) does not match the name on the URL (${String(t.name)})`);
      if (!existing) return notFound(t.resource, name);
      const rv = obj.metadata['resourceVersion'];
      if (rv === undefined && info.group !== '') {
        return invalid(info.kind, info.group, name, 'metadata.resourceVersion', '0x0', 'must be specified for an update');
      }
      if (rv !== undefined && rv !== existing.metadata['resourceVersion']) {
        return statusError(
          409,
          'Conflict',
          `Operation cannot be fulfilled on ${qualified(t.resource)} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
          { name, ...(info.group ? { group: info.group } : {}), kind: t.resource },
        );
      }
    }
    if (t.resource === 'services') validateService(obj, dryRun);
    if (dryRun) {
      obj.apiVersion = apiVersionOf(info);
      obj.metadata = { ...obj.metadata, uid: existing?.metadata['uid'] ?? randomUUID(), creationTimestamp: rfc3339(new Date()) };
      return [method === 'POST' ? 201 : 200, obj];
    }
    return [method === 'POST' ? 201 : 200, objects.put(obj)];
  }

  function route(t: Target, method: string, url: URL, body: unknown): [number, unknown] {
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
          if (info.group !== '' && info.group !== 'networking.k8s.io') return o; // custom resources keep kind/apiVersion in lists
          const { apiVersion: _a, kind: _k, ...rest } = o;
          return rest;
        });
      return [200, { kind: `${info.kind}List`, apiVersion: apiVersionOf(info), metadata: { resourceVersion: objects.resourceVersion }, items }];
    }
    if (t.verb === 'create' || t.verb === 'update') return write(t, method, url, body);
    if (t.verb === 'delete') {
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
      let body: unknown;
      if (raw.trim() !== '') {
        try {
          body = JSON.parse(raw);
        } catch (err) {
          return statusError(400, 'BadRequest', `error decoding request body: ${String(err)}`);
        }
      }
      const [status, out] = route(target, method, url, body);
      sendJson(res, status, out);
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
