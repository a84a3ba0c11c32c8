// HashiCorp Vault HTTP API v1 (server 1.15+ semantics): sys/health, AppRole + AWS IAM login, token self-ops, KV v2, Kubernetes secrets engine, response wrapping, namespaces, ACL.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { delay, Faults, listen, randomId, readBody, recordCall, resetConnection, sendJson } from './common.ts';
import type { Call, CommonFault } from './common.ts';
import { RateLimit } from './limits.ts';
import { AMZ_DATE_RE, parseAuthorization, signature } from './sigv4.ts';

export type Capability = 'create' | 'read' | 'update' | 'patch' | 'delete' | 'list' | 'sudo' | 'deny';
/** A policy path: exact, trailing "*" = prefix, "+" = one segment. Relative to the token's namespace. */
export interface PolicyRule {
  path: string;
  capabilities: Capability[];
}

interface TokenParams {
  policies?: string[];
  /** Seconds (default: options.defaultTokenTtl, 3600). */
  ttl?: number;
  /** Seconds; renewals never go past issue time + maxTtl (default 32 days). */
  maxTtl?: number;
  /** Vault namespace the token lives in ("" = root). */
  namespace?: string;
  renewable?: boolean;
}
export interface AppRole extends TokenParams {
  roleId: string;
  secretId: string;
}
export interface AwsRole extends TokenParams {
  boundIamPrincipalArns?: string[];
}
/** What STS would answer for an access key; give secretAccessKey to have signatures verified. */
export interface AwsIdentity {
  arn: string;
  secretAccessKey?: string;
}
export interface KubernetesRole {
  serviceAccountName: string;
  /** Kubernetes namespaces the caller may ask for; ["*"] = any. */
  allowedKubernetesNamespaces: string[];
  tokenDefaultTtl?: number;
  tokenMaxTtl?: number;
  /** Vault namespace the role lives in ("" = root). */
  namespace?: string;
}
export interface KubernetesTokenRequest {
  role: string;
  serviceAccountName: string;
  kubernetesNamespace: string;
  ttlSeconds: number;
  audiences?: string[];
}
/** Wire to the Kubernetes stand-in: `(r) => kube.tokens.mint({ namespace: r.kubernetesNamespace, serviceAccount: r.serviceAccountName, expirationSeconds: r.ttlSeconds, audiences: r.audiences })`. */
export type MintKubernetesToken = (req: KubernetesTokenRequest) => Promise<{ token: string }> | { token: string };

export interface VaultOptions {
  tls?: boolean;
  /** The certificate served with tls: true (default: the shared test PKI). */
  pki?: { certPem: string; keyPem: string; caPem: string };
  port?: number;
  initialized?: boolean;
  sealed?: boolean;
  standby?: boolean;
  version?: string;
  policies?: Record<string, PolicyRule[]>;
  /** Keyed by role name; login looks the role up by roleId within the request's namespace. */
  appRoles?: Record<string, AppRole>;
  aws?: {
    roles: Record<string, AwsRole>;
    /** Keyed by access key id. Unknown keys are refused like STS does (InvalidClientTokenId). */
    identities: Record<string, AwsIdentity>;
    /** When set, X-Vault-AWS-IAM-Server-ID must be present, equal and signed. */
    iamServerId?: string;
    /** Default "https://sts.amazonaws.com/" signed for region us-east-1. */
    stsUrl?: string;
    stsRegion?: string;
  };
  kubernetes?: { mount?: string; roles: Record<string, KubernetesRole>; mint?: MintKubernetesToken };
  /** KV v2 mount paths (default ["secret"]). */
  kvMounts?: string[];
  defaultTokenTtl?: number;
  /**
   * A rate-limit quota (sys/quotas/rate-limit), off by default as in Vault: `rate` requests per `intervalSeconds`
   * (Vault's default interval 1 s); beyond it 429 with `request path "...": rate limit quota exceeded`. Vault sends
   * Retry-After and X-Ratelimit-* only with sys/quotas/config enable_rate_limit_response_headers=true (`headers`).
   * sys/health and sys/seal-status are exempt, as in Vault's default rate_limit_exempt_paths. Vault counts per client
   * address; every simulated VM here is 127.0.0.1, so one bucket: the fleet-wide (strict) case.
   */
  rateLimit?: { rate: number; intervalSeconds?: number; headers?: boolean };
}

export interface VaultToken {
  id: string;
  accessor: string;
  policies: string[];
  namespace: string;
  ttl: number;
  issuedAt: number;
  expiresAt: number;
  maxExpiresAt: number;
  renewable: boolean;
  revoked: boolean;
  path: string;
  meta: Record<string, string>;
}
export interface KvVersion {
  data: Record<string, unknown>;
  createdTime: string;
  deletionTime: string;
  destroyed: boolean;
}
export interface KvSecret {
  versions: Map<number, KvVersion>;
  current: number;
  createdTime: string;
  customMetadata: Record<string, string> | null;
}
export interface VaultLease {
  id: string;
  expiresAt: number;
  revoked: boolean;
  data: Record<string, unknown>;
}
/** A response-wrapping token's cubbyhole: the response it wraps, single use (deleted by the unwrap). */
export interface WrappedResponse {
  response: Record<string, unknown>;
  creationPath: string;
  expiresAt: number;
}
export interface VaultState {
  initialized: boolean;
  sealed: boolean;
  standby: boolean;
  tokens: Map<string, VaultToken>;
  /** Keyed by wrapping token. */
  wrapped: Map<string, WrappedResponse>;
  /** secret_ids generated by auth/approle/role/<name>/secret-id, by role name (besides each role's configured secretId). */
  secretIds: Map<string, Set<string>>;
  /** Keyed `${namespace}|${mount}|${path}`. */
  kv: Map<string, KvSecret>;
  leases: Map<string, VaultLease>;
}

export type VaultFault =
  | CommonFault
  | { kind: 'throttle'; retryAfter?: number }
  | { kind: 'sealed' }
  /** The token sent with the matching request expires just before it is handled. */
  | { kind: 'expire-token' };

export interface VaultStandIn {
  /** Base URL, e.g. http://127.0.0.1:41234 (what VAULT_ADDR / node-vault `endpoint` take). */
  url: string;
  /** Same as url. */
  address: string;
  port: number;
  /** CA to trust when started with tls: true. */
  caPem?: string;
  state: VaultState;
  faults: Faults<VaultFault>;
  calls: Call[];
  /** Writes a new KV v2 version (as a client POST would) and returns its version number. */
  putSecret(mount: string, path: string, data: Record<string, unknown>, opts?: { namespace?: string; customMetadata?: Record<string, string> }): number;
  /** Soft-deletes (or destroys) a version; default the current one. */
  deleteSecret(mount: string, path: string, opts?: { namespace?: string; version?: number; destroy?: boolean }): void;
  /** Mints a token directly (no login call), e.g. for tests that start past authentication. */
  issueToken(params?: TokenParams & { meta?: Record<string, string> }): string;
  expireToken(token: string): void;
  /** Wraps `data` as sys/wrapping/wrap would (unwrap returns it as `data`); returns the wrapping token. Default TTL 300 s. */
  wrap(data: Record<string, unknown>, ttlSeconds?: number, token?: string): string;
  stop(): Promise<void>;
}

const PERMISSION_DENIED = '1 error occurred:\n\t* permission denied\n\n';
const INVALID_TOKEN = '2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n';
const DEFAULT_POLICY: PolicyRule[] = [
  { path: 'auth/token/lookup-self', capabilities: ['read'] },
  { path: 'auth/token/renew-self', capabilities: ['update'] },
  { path: 'auth/token/revoke-self', capabilities: ['update'] },
  { path: 'sys/leases/renew', capabilities: ['update'] },
  { path: 'sys/leases/revoke', capabilities: ['update'] },
  { path: 'sys/wrapping/wrap', capabilities: ['update'] },
  { path: 'sys/wrapping/lookup', capabilities: ['update'] },
  { path: 'sys/wrapping/unwrap', capabilities: ['update'] },
];
const WRAPPING_TOKEN_INVALID = 'wrapping token is not valid or does not exist';

class VaultError extends Error {
  status: number;
  errors: string[];
  constructor(status: number, errors: string[]) {
    super(errors.join('; '));
    this.status = status;
    this.errors = errors;
  }
}
const fail = (status: number, ...errors: string[]): never => {
  throw new VaultError(status, errors);
};

/** `?list=` parsed like Go's strconv.ParseBool, as Vault does (node-vault sends list=1). */
const isListQuery = (url: URL): boolean => ['1', 't', 'T', 'TRUE', 'true', 'True'].includes(url.searchParams.get('list') ?? '');
const ns = (raw: string | undefined): string => (raw ?? '').trim().replace(/^\/+|\/+$/g, '');
const nowIso = (): string => new Date().toISOString();

/** Go-style duration ("1h30m", "600s") or plain seconds. */
export function parseDuration(v: unknown): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'number') return v;
  const s = String(v);
  if (/^\d+$/.test(s)) return Number(s);
  const parts = [...s.matchAll(/(\d+(?:\.\d+)?)(h|m|s)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== s) return fail(400, `invalid duration "${s}"`);
  return parts.reduce((sum, p) => sum + Number(p[1]) * { h: 3600, m: 60, s: 1 }[p[2] as 'h' | 'm' | 's'], 0);
}

function patternMatches(pattern: string, path: string): boolean {
  const glob = pattern.endsWith('*');
  const base = glob ? pattern.slice(0, -1) : pattern;
  const re = base
    .split('+')
    .map((s) => s.replace(/[.*?^${}()|[\]\\]/g, '\\$&'))
    .join('[^/]+');
  return new RegExp(`^${re}${glob ? '.*' : ''}$`).test(path);
}

/** Vault picks one rule: an exact path wins, else the most specific pattern (longest, fewest "+"). */
function capabilitiesFor(rules: PolicyRule[], path: string): Set<Capability> {
  const merged = new Map<string, Set<Capability>>();
  for (const r of rules) {
    const set = merged.get(r.path) ?? new Set<Capability>();
    for (const c of r.capabilities) set.add(c);
    merged.set(r.path, set);
  }
  const candidates = [...merged.keys()].filter((p) => patternMatches(p, path));
  const exact = candidates.find((p) => p === path);
  const score = (p: string): number => p.replace(/[*+]/g, '').length * 10 - (p.split('+').length - 1);
  const best = exact ?? candidates.sort((a, b) => score(b) - score(a))[0];
  return best === undefined ? new Set() : merged.get(best)!;
}

const RATE_LIMIT_EXEMPT = new Set(['sys/health', 'sys/seal-status']);

export async function startVault(opts: VaultOptions = {}): Promise<VaultStandIn> {
  const state: VaultState = {
    initialized: opts.initialized ?? true,
    sealed: opts.sealed ?? false,
    standby: opts.standby ?? false,
    tokens: new Map(),
    wrapped: new Map(),
    secretIds: new Map(),
    kv: new Map(),
    leases: new Map(),
  };
  const faults = new Faults<VaultFault>();
  const calls: Call[] = [];
  const quota = opts.rateLimit ? new RateLimit(opts.rateLimit.rate, (opts.rateLimit.intervalSeconds ?? 1) * 1000) : undefined;
  const policies = opts.policies ?? {};
  const kvMounts = opts.kvMounts ?? ['secret'];
  const k8sMount = opts.kubernetes?.mount ?? 'kubernetes';
  const version = opts.version ?? '1.19.0';
  const clusterId = randomUUID();

  function issueToken(p: TokenParams & { meta?: Record<string, string>; path?: string } = {}): string {
    const id = `hvs.${randomId(24, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789')}`;
    const ttl = p.ttl ?? opts.defaultTokenTtl ?? 3600;
    const now = Date.now();
    state.tokens.set(id, {
      id,
      accessor: randomId(24, 'abcdefghijklmnopqrstuvwxyz0123456789'),
      policies: p.policies?.includes('root') ? ['root'] : ['default', ...(p.policies ?? []).filter((x) => x !== 'default')],
      namespace: ns(p.namespace),
      ttl,
      issuedAt: now,
      expiresAt: now + ttl * 1000,
      maxExpiresAt: now + (p.maxTtl ?? 32 * 86400) * 1000,
      renewable: p.renewable ?? true,
      revoked: false,
      path: p.path ?? 'auth/token/create',
      meta: p.meta ?? {},
    });
    return id;
  }

  function authBlock(t: VaultToken): Record<string, unknown> {
    return {
      client_token: t.id,
      accessor: t.accessor,
      policies: t.policies,
      token_policies: t.policies,
      metadata: t.meta,
      lease_duration: Math.max(0, Math.round((t.expiresAt - Date.now()) / 1000)),
      renewable: t.renewable,
      entity_id: '',
      token_type: 'service',
      orphan: true,
      mfa_requirement: null,
      num_uses: 0,
    };
  }

  const envelope = (extra: Record<string, unknown>): Record<string, unknown> => ({
    request_id: randomUUID(),
    lease_id: '',
    renewable: false,
    lease_duration: 0,
    data: null,
    wrap_info: null,
    warnings: null,
    auth: null,
    mount_type: '',
    ...extra,
  });

  function putSecret(
    mount: string,
    path: string,
    data: Record<string, unknown>,
    o: { namespace?: string; customMetadata?: Record<string, string> } = {},
  ): number {
    const key = `${ns(o.namespace)}|${mount}|${path}`;
    const secret = state.kv.get(key) ?? { versions: new Map(), current: 0, createdTime: nowIso(), customMetadata: null };
    secret.current += 1;
    secret.versions.set(secret.current, { data: structuredClone(data), createdTime: nowIso(), deletionTime: '', destroyed: false });
    for (const v of secret.versions.keys()) if (v <= secret.current - 10) secret.versions.delete(v); // max_versions 10
    if (o.customMetadata) secret.customMetadata = o.customMetadata;
    state.kv.set(key, secret);
    return secret.current;
  }

  function deleteSecret(mount: string, path: string, o: { namespace?: string; version?: number; destroy?: boolean } = {}): void {
    const secret = state.kv.get(`${ns(o.namespace)}|${mount}|${path}`);
    const v = secret?.versions.get(o.version ?? secret.current);
    if (!v) throw new Error(`no such secret version: ${mount}/${path}`);
    v.deletionTime = nowIso();
    if (o.destroy) {
      v.destroyed = true;
      v.data = {};
    }
  }

  /** Resolves the caller's token and checks the ACL for `path` (relative to the request namespace). */
  function authorize(req: IncomingMessage, reqNs: string, path: string, wanted: Capability[]): VaultToken {
    const id = req.headers['x-vault-token'];
    if (typeof id !== 'string' || id === '') return fail(403, 'permission denied');
    const t = state.tokens.get(id);
    if (!t || t.revoked || t.expiresAt <= Date.now()) return fail(403, INVALID_TOKEN);
    const inside = t.namespace === '' || reqNs === t.namespace || reqNs.startsWith(`${t.namespace}/`);
    if (!inside) return fail(403, PERMISSION_DENIED);
    if (t.policies.includes('root')) return t;
    const rel = [reqNs.slice(t.namespace.length).replace(/^\//, ''), path].filter(Boolean).join('/');
    const rules = t.policies.flatMap((p) => (p === 'default' ? DEFAULT_POLICY : (policies[p] ?? [])));
    const caps = capabilitiesFor(rules, rel);
    if (caps.has('deny') || !wanted.some((c) => caps.has(c))) return fail(403, PERMISSION_DENIED);
    return t;
  }

  function loginAppRole(reqNs: string, body: Record<string, unknown>): Record<string, unknown> {
    if (typeof body['role_id'] !== 'string' || body['role_id'] === '') return fail(400, 'missing role_id');
    const entry = Object.entries(opts.appRoles ?? {}).find(([, r]) => r.roleId === body['role_id'] && ns(r.namespace) === reqNs);
    const generated = entry ? state.secretIds.get(entry[0]) : undefined;
    if (!entry || (entry[1].secretId !== body['secret_id'] && !generated?.has(String(body['secret_id'])))) return fail(400, 'invalid role or secret ID');
    const [name, role] = entry;
    const t = issueToken({ ...role, namespace: reqNs, meta: { role_name: name }, path: 'auth/approle/login' });
    return envelope({ auth: authBlock(state.tokens.get(t)!) });
  }

  /** Vault's response wrapping: the response goes into a single-use token's cubbyhole; the caller gets wrap_info. */
  function wrap(response: Record<string, unknown>, ttl: number, creationPath: string, given?: string): Record<string, unknown> {
    const token = given ?? `hvs.${randomId(24, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789')}`;
    const now = Date.now();
    state.wrapped.set(token, { response, creationPath, expiresAt: now + ttl * 1000 });
    return envelope({
      wrap_info: {
        token,
        accessor: randomId(24, 'abcdefghijklmnopqrstuvwxyz0123456789'),
        ttl,
        creation_time: new Date(now).toISOString(),
        creation_path: creationPath,
      },
    });
  }

  /** sys/wrapping/unwrap: the wrapping token as the request's token (or in the body, with another valid token); once only. */
  function unwrap(req: IncomingMessage, body: Record<string, unknown>): Record<string, unknown> {
    const header = String(req.headers['x-vault-token'] ?? '');
    const inBody = typeof body['token'] === 'string' && body['token'] !== '' ? body['token'] : undefined;
    if (header === '' && inBody === undefined) return fail(400, 'missing client token');
    const token = inBody ?? header;
    const entry = state.wrapped.get(token);
    // the token is revoked before the response is given: a second unwrap, or one after the TTL, finds nothing
    state.wrapped.delete(token);
    if (!entry || entry.expiresAt <= Date.now()) return fail(400, WRAPPING_TOKEN_INVALID);
    return entry.response;
  }

  function loginAws(reqNs: string, body: Record<string, unknown>): Record<string, unknown> {
    const aws = opts.aws ?? fail(404, 'no handler for route "auth/aws/login". route entry not found.');
    const roleName = String(body['role'] ?? '');
    const role = aws.roles[roleName];
    if (!role || ns(role.namespace) !== reqNs) return fail(400, `entry for role ${roleName} not found`);
    for (const f of ['iam_http_request_method', 'iam_request_url', 'iam_request_body', 'iam_request_headers']) {
      if (typeof body[f] !== 'string' || body[f] === '') return fail(400, `missing ${f}`);
    }
    if (body['iam_http_request_method'] !== 'POST') return fail(400, 'invalid iam_http_request_method; can only be POST');
    const b64 = (f: string): string => Buffer.from(String(body[f]), 'base64').toString('utf8');
    const stsUrl = aws.stsUrl ?? 'https://sts.amazonaws.com/';
    const url = b64('iam_request_url');
    if (url !== stsUrl) return fail(400, `error validating iam_request_url: expected ${JSON.stringify(stsUrl)} but got ${JSON.stringify(url)}`);
    const form = new URLSearchParams(b64('iam_request_body'));
    if (form.get('Action') !== 'GetCallerIdentity' || form.get('Version') !== '2011-06-15') {
      return fail(400, 'error parsing iam_request_body: not a GetCallerIdentity request');
    }
    let raw: unknown;
    try {
      raw = JSON.parse(b64('iam_request_headers'));
    } catch {
      return fail(400, 'error parsing iam_request_headers: invalid JSON');
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail(400, 'error parsing iam_request_headers: not an object');
    const headers: Record<string, string> = {}; // Go http.Header: {"Name": ["v1", "v2"]}; plain strings also accepted
    for (const [k, v] of Object.entries(raw)) {
      if (typeof v === 'string') headers[k.toLowerCase()] = v;
      else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) headers[k.toLowerCase()] = v.join(',');
      else return fail(400, `error parsing iam_request_headers: header ${k} is not a string or list of strings`);
    }
    const auth = parseAuthorization(headers['authorization']);
    const stsError = (code: string, msg: string): never =>
      fail(
        400,
        `error making upstream request: received error code 403 from STS: <ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>${code}</Code><Message>${msg}</Message></Error></ErrorResponse>`,
      );
    if (auth?.service !== 'sts') return stsError('IncompleteSignature', 'Authorization header is missing or not an AWS4-HMAC-SHA256 signature for sts');
    const amzDate = headers['x-amz-date'] ?? '';
    const dm = AMZ_DATE_RE.exec(amzDate);
    if (!dm || !auth.signedHeaders.includes('x-amz-date')) return stsError('IncompleteSignature', 'X-Amz-Date is missing or not signed');
    if (dm[1] !== auth.date) return stsError('SignatureDoesNotMatch', 'Credential date does not match X-Amz-Date');
    const region = aws.stsRegion ?? 'us-east-1';
    if (auth.region !== region) return stsError('SignatureDoesNotMatch', `Credential should be scoped to a valid region, not '${auth.region}'`);
    const signedAt = Date.parse(amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z'));
    if (Math.abs(Date.now() - signedAt) > 15 * 60_000) return stsError('SignatureDoesNotMatch', 'Signature expired');
    if (aws.iamServerId !== undefined) {
      const name = 'X-Vault-AWS-IAM-Server-ID';
      const got = headers[name.toLowerCase()];
      if (got === undefined) return fail(400, `error validating ${name} header: missing header "${name}"`);
      if (got !== aws.iamServerId) return fail(400, `error validating ${name} header: expected "${aws.iamServerId}" but got "${got}"`);
      if (!auth.signedHeaders.includes(name.toLowerCase())) return fail(400, `error validating ${name} header: vault header wasn't signed`);
    }
    const identity = aws.identities[auth.accessKeyId];
    if (!identity) return stsError('InvalidClientTokenId', 'The security token included in the request is invalid.');
    if (identity.secretAccessKey !== undefined) {
      const host = new URL(url).host;
      const expected = signature({
        method: 'POST',
        pathAndQuery: new URL(url).pathname,
        headers: { host, ...headers },
        signedHeaders: auth.signedHeaders,
        body: b64('iam_request_body'),
        secretAccessKey: identity.secretAccessKey,
        amzDate,
        region,
        service: 'sts',
      });
      if (expected !== auth.signature)
        return stsError('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.');
    }
    const bound = role.boundIamPrincipalArns;
    const principal = identity.arn.replace(/^arn:aws:sts::(\d+):assumed-role\/([^/]+)\/.*$/, 'arn:aws:iam::$1:role/$2');
    if (bound && !bound.some((b) => patternMatches(b, principal))) {
      return fail(400, `IAM Principal "${principal}" does not belong to the role "${roleName}"`);
    }
    const account = /^arn:aws:\w+::(\d+):/.exec(identity.arn)?.[1] ?? '';
    const t = issueToken({
      ...role,
      namespace: reqNs,
      path: 'auth/aws/login',
      meta: {
        account_id: account,
        auth_type: 'iam',
        role_id: roleName,
        client_arn: identity.arn,
        canonical_arn: principal,
        client_user_id: auth.accessKeyId,
        inferred_entity_id: '',
        inferred_entity_type: '',
      },
    });
    return envelope({ auth: authBlock(state.tokens.get(t)!) });
  }

  async function kubernetesCreds(reqNs: string, roleName: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const role = opts.kubernetes?.roles[roleName];
    if (!role || ns(role.namespace) !== reqNs) return fail(400, `role '${roleName}' does not exist`);
    const k8sNs = body['kubernetes_namespace'];
    if (typeof k8sNs !== 'string' || k8sNs === '') return fail(400, "'kubernetes_namespace' is required");
    if (!role.allowedKubernetesNamespaces.includes('*') && !role.allowedKubernetesNamespaces.includes(k8sNs)) {
      return fail(400, `kubernetes_namespace '${k8sNs}' is not present in role's allowed_kubernetes_namespaces`);
    }
    const max = role.tokenMaxTtl ?? 86400;
    const requested = parseDuration(body['ttl']) ?? role.tokenDefaultTtl ?? 3600;
    const ttl = Math.min(requested, max);
    const audiences = Array.isArray(body['audiences'])
      ? body['audiences'].map(String)
      : typeof body['audiences'] === 'string'
        ? body['audiences'].split(',')
        : undefined;
    const request: KubernetesTokenRequest = { role: roleName, serviceAccountName: role.serviceAccountName, kubernetesNamespace: k8sNs, ttlSeconds: ttl };
    if (audiences) request.audiences = audiences;
    let token: string;
    try {
      token = opts.kubernetes?.mint ? (await opts.kubernetes.mint(request)).token : fakeJwt(request);
    } catch (err) {
      return fail(500, `failed to create a service account token for ${k8sNs}/${role.serviceAccountName}: ${String(err instanceof Error ? err.message : err)}`);
    }
    const leaseId = `${k8sMount}/creds/${roleName}/${randomId(24, 'abcdefghijklmnopqrstuvwxyz0123456789')}`;
    const data = { service_account_name: role.serviceAccountName, service_account_namespace: k8sNs, service_account_token: token };
    state.leases.set(leaseId, { id: leaseId, expiresAt: Date.now() + ttl * 1000, revoked: false, data });
    return envelope({
      lease_id: leaseId,
      lease_duration: ttl,
      data,
      mount_type: 'kubernetes',
      warnings: requested > max ? [`ttl of ${requested}s exceeded the role's token_max_ttl; capped to ${max}s`] : null,
    });
  }

  function kv(reqNs: string, req: IncomingMessage, url: URL, mount: string, rest: string, body: Record<string, unknown>): Record<string, unknown> | undefined {
    const [kind, ...segs] = rest.split('/');
    const path = segs.join('/');
    const key = `${reqNs}|${mount}|${path}`;
    const secret = state.kv.get(key);
    const method = req.method === 'LIST' || isListQuery(url) ? 'LIST' : req.method;
    const versionMeta = (v: number, x: KvVersion): Record<string, unknown> => ({
      created_time: x.createdTime,
      custom_metadata: secret?.customMetadata ?? null,
      deletion_time: x.deletionTime,
      destroyed: x.destroyed,
      version: v,
    });
    if (kind === 'data' && method === 'GET') {
      const v = url.searchParams.has('version') && url.searchParams.get('version') !== '0' ? Number(url.searchParams.get('version')) : secret?.current;
      const x = v === undefined ? undefined : secret?.versions.get(v);
      if (!x) return fail(404);
      if (x.deletionTime !== '' || x.destroyed) throw new VaultBody(404, envelope({ data: { data: null, metadata: versionMeta(v!, x) }, mount_type: 'kv' }));
      return envelope({ data: { data: x.data, metadata: versionMeta(v!, x) }, mount_type: 'kv' });
    }
    if (kind === 'data' && (method === 'POST' || method === 'PUT')) {
      const data = body['data'];
      if (typeof data !== 'object' || data === null) return fail(400, 'no data provided');
      const cas = (body['options'] as { cas?: number } | undefined)?.cas;
      if (cas !== undefined && cas !== (secret?.current ?? 0)) return fail(400, 'check-and-set parameter did not match the current version');
      const v = putSecret(mount, path, data as Record<string, unknown>, { namespace: reqNs });
      return envelope({ data: versionMeta(v, state.kv.get(key)!.versions.get(v)!), mount_type: 'kv' });
    }
    if (kind === 'data' && method === 'DELETE') {
      if (secret) deleteSecret(mount, path, { namespace: reqNs });
      return undefined;
    }
    if (kind === 'metadata' && method === 'LIST') {
      const prefix = path === '' || path.endsWith('/') ? path : `${path}/`;
      const keys = new Set<string>();
      for (const k of state.kv.keys()) {
        const [kNs, kMount, kPath = ''] = k.split('|');
        if (kNs !== reqNs || kMount !== mount || !kPath.startsWith(prefix)) continue;
        const tail = kPath.slice(prefix.length);
        keys.add(tail.includes('/') ? `${tail.split('/')[0]}/` : tail);
      }
      if (keys.size === 0) return fail(404);
      return envelope({ data: { keys: [...keys].sort() }, mount_type: 'kv' });
    }
    if (kind === 'metadata' && method === 'GET') {
      if (!secret) return fail(404);
      const versions = Object.fromEntries(
        [...secret.versions].map(([v, x]) => [String(v), { created_time: x.createdTime, deletion_time: x.deletionTime, destroyed: x.destroyed }]),
      );
      return envelope({
        mount_type: 'kv',
        data: {
          cas_required: false,
          created_time: secret.createdTime,
          current_version: secret.current,
          custom_metadata: secret.customMetadata,
          delete_version_after: '0s',
          max_versions: 0,
          oldest_version: Math.min(...secret.versions.keys()),
          updated_time: secret.versions.get(secret.current)?.createdTime ?? secret.createdTime,
          versions,
        },
      });
    }
    return fail(405, '1 error occurred:\n\t* unsupported operation\n\n');
  }

  const capabilityFor = (method: string, list: boolean): Capability[] =>
    list || method === 'LIST'
      ? ['list']
      : method === 'GET' || method === 'HEAD'
        ? ['read']
        : method === 'DELETE'
          ? ['delete']
          : method === 'PATCH'
            ? ['patch']
            : ['create', 'update'];

  async function route(req: IncomingMessage, url: URL, body: Record<string, unknown>): Promise<[number, unknown] | undefined> {
    const method = req.method ?? 'GET';
    const path = url.pathname.replace(/^\/v1\//, '').replace(/\/+$/, '');
    if (path === 'sys/health') {
      const q = url.searchParams;
      const code = (name: string, dflt: number): number => Number(q.get(name) ?? dflt);
      const status = !state.initialized
        ? code('uninitcode', 501)
        : state.sealed
          ? code('sealedcode', 503)
          : state.standby && q.get('standbyok') !== 'true'
            ? code('standbycode', 429)
            : code('activecode', 200);
      return [
        status,
        {
          initialized: state.initialized,
          sealed: state.sealed,
          standby: state.standby,
          performance_standby: false,
          replication_performance_mode: 'disabled',
          replication_dr_mode: 'disabled',
          server_time_utc: Math.floor(Date.now() / 1000),
          version,
          enterprise: false,
          cluster_name: 'vault-cluster-standin',
          cluster_id: clusterId,
          echo_duration_ms: 0,
          clock_skew_ms: 0,
        },
      ];
    }
    if (path === 'sys/seal-status') {
      return [
        200,
        {
          type: 'shamir',
          initialized: state.initialized,
          sealed: state.sealed,
          t: 1,
          n: 1,
          progress: 0,
          nonce: '',
          version,
          build_date: '2025-01-01T00:00:00Z',
          migration: false,
          cluster_name: 'vault-cluster-standin',
          cluster_id: clusterId,
          recovery_seal: false,
          storage_type: 'inmem',
        },
      ];
    }
    if (state.sealed) return fail(503, 'Vault is sealed');
    const reqNs = ns(req.headers['x-vault-namespace'] as string | undefined);
    const write = method === 'POST' || method === 'PUT';
    if (write && path === 'auth/approle/login') return [200, loginAppRole(reqNs, body)];
    if (write && path === 'auth/aws/login') return [200, loginAws(reqNs, body)];
    if (write && path === 'sys/wrapping/unwrap' && !(typeof body['token'] === 'string' && body['token'] !== '')) return [200, unwrap(req, body)];
    const list = method === 'LIST' || isListQuery(url);
    // Vault adds a trailing slash to list paths before the ACL check ("secret/metadata/app/*" covers LIST secret/metadata/app).
    const token = authorize(req, reqNs, list ? `${path}/` : path, capabilityFor(method, list));
    if (path === 'sys/wrapping/unwrap' && write) return [200, unwrap(req, body)];
    if (path === 'auth/token/lookup-self' && method === 'GET') {
      const ttl = Math.max(0, Math.round((token.expiresAt - Date.now()) / 1000));
      return [
        200,
        envelope({
          data: {
            accessor: token.accessor,
            creation_time: Math.floor(token.issuedAt / 1000),
            creation_ttl: token.ttl,
            display_name: token.path.split('/')[1] ?? 'token',
            entity_id: '',
            expire_time: new Date(token.expiresAt).toISOString(),
            explicit_max_ttl: 0,
            id: token.id,
            issue_time: new Date(token.issuedAt).toISOString(),
            meta: token.meta,
            num_uses: 0,
            orphan: true,
            path: token.path,
            policies: token.policies,
            renewable: token.renewable,
            ttl,
            type: 'service',
            namespace_path: token.namespace === '' ? '' : `${token.namespace}/`,
          },
        }),
      ];
    }
    if (path === 'auth/token/revoke-self' && write) {
      token.revoked = true;
      return undefined;
    }
    if (path === 'auth/token/renew-self' && write) {
      if (!token.renewable) return fail(400, 'lease is not renewable');
      const increment = parseDuration(body['increment']) ?? token.ttl;
      const until = Math.min(Date.now() + increment * 1000, token.maxExpiresAt);
      token.expiresAt = until;
      const warnings = until === token.maxExpiresAt ? ['TTL of the renewal exceeded the effective max_ttl; TTL value is capped accordingly'] : null;
      return [200, envelope({ auth: authBlock(token), warnings })];
    }
    if (path === 'sys/leases/revoke' && write) {
      const lease = state.leases.get(String(body['lease_id'] ?? ''));
      if (!lease) return fail(400, 'invalid lease');
      lease.revoked = true;
      return undefined;
    }
    if (path === 'sys/wrapping/wrap' && write) return [200, envelope({ data: body })];
    const secretIdFor = /^auth\/approle\/role\/([^/]+)\/secret-id$/.exec(path);
    if (secretIdFor && write) {
      const name = secretIdFor[1]!;
      if (!opts.appRoles?.[name]) return fail(400, `role "${name}" does not exist`);
      const secretId = randomUUID();
      state.secretIds.set(name, (state.secretIds.get(name) ?? new Set()).add(secretId));
      return [200, envelope({ data: { secret_id: secretId, secret_id_accessor: randomUUID(), secret_id_ttl: 0, secret_id_num_uses: 0 } })];
    }
    const creds = new RegExp(`^${k8sMount}/creds/([^/]+)$`).exec(path);
    if (creds && write && opts.kubernetes) return [200, await kubernetesCreds(reqNs, creds[1]!, body)];
    const mount = kvMounts.filter((m) => path.startsWith(`${m}/`)).sort((a, b) => b.length - a.length)[0];
    if (mount !== undefined) {
      const out = kv(reqNs, req, url, mount, path.slice(mount.length + 1), body);
      return out === undefined ? undefined : [200, out];
    }
    return fail(404, `no handler for route "${path}". route entry not found.`);
  }

  async function handle(req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://vault');
    const call = recordCall(calls, req, res, url);
    const { delayMs, fault } = faults.take({ method: req.method ?? 'GET', path: url.pathname });
    if (!(await delay(delayMs, signal))) return;
    if (fault) call.fault = fault.kind;
    if (fault?.kind === 'reset') return resetConnection(res);
    if (fault?.kind === 'status') return sendJson(res, fault.status ?? 500, { errors: ['1 error occurred:\n\t* internal error (injected)\n\n'] });
    if (fault?.kind === 'sealed') return sendJson(res, 503, { errors: ['Vault is sealed'] });
    if (fault?.kind === 'throttle') {
      const path = url.pathname.replace(/^\/v1\//, '');
      return sendJson(res, 429, { errors: [`request path "${path}": rate limit quota exceeded`] }, { 'retry-after': String(fault.retryAfter ?? 1) });
    }
    const quotaPath = url.pathname.replace(/^\/v1\//, '');
    const waitMs = quota && !RATE_LIMIT_EXEMPT.has(quotaPath) ? quota.take() : 0;
    if (waitMs > 0) {
      call.limited = true;
      const headers = opts.rateLimit?.headers
        ? { 'retry-after': String(Math.ceil(waitMs / 1000)), 'x-ratelimit-limit': String(quota?.rate), 'x-ratelimit-remaining': '0' }
        : undefined;
      return sendJson(res, 429, { errors: [`request path "${quotaPath}": rate limit quota exceeded`] }, headers);
    }
    if (fault?.kind === 'expire-token') {
      const t = state.tokens.get(String(req.headers['x-vault-token'] ?? ''));
      if (t) t.expiresAt = Date.now() - 1;
    }
    try {
      const raw = (await readBody(req)).toString('utf8');
      let body: Record<string, unknown> = {};
      if (raw.trim() !== '') {
        try {
          body = JSON.parse(raw) as Record<string, unknown>;
        } catch (err) {
          return sendJson(res, 400, { errors: [`failed to parse JSON input: ${String(err)}`] });
        }
      }
      const out = await route(req, url, body);
      if (out === undefined) {
        res.writeHead(204).end();
        return;
      }
      // X-Vault-Wrap-TTL: the response is wrapped (sys/wrapping/wrap without it: Vault's CLI default, 5 minutes)
      const wrapTtl = req.headers['x-vault-wrap-ttl'];
      const path = url.pathname.replace(/^\/v1\//, '');
      if (out[0] === 200 && (typeof wrapTtl === 'string' || path === 'sys/wrapping/wrap')) {
        return sendJson(res, 200, wrap(out[1] as Record<string, unknown>, parseDuration(wrapTtl) ?? 300, path));
      }
      sendJson(res, out[0], out[1]);
    } catch (err) {
      if (err instanceof VaultBody) return sendJson(res, err.status, err.body);
      if (err instanceof VaultError) return sendJson(res, err.status, { errors: err.errors });
      throw err;
    }
  }

  const listenOpts = { tls: opts.tls ?? false, extraMethods: ['LIST'], ...(opts.pki && { pki: opts.pki }) };
  const server = await listen(handle, opts.port === undefined ? listenOpts : { ...listenOpts, port: opts.port });
  const standIn: VaultStandIn = {
    url: server.url,
    address: server.url,
    port: server.port,
    state,
    faults,
    calls,
    putSecret,
    deleteSecret,
    issueToken: (p) => issueToken(p),
    wrap: (data, ttlSeconds = 300, token) => {
      const info = wrap(envelope({ data }), ttlSeconds, 'sys/wrapping/wrap', token)['wrap_info'] as { token: string };
      return info.token;
    },
    expireToken(token) {
      const t = state.tokens.get(token);
      if (t) t.expiresAt = Date.now() - 1;
    },
    stop: () => server.stop(),
  };
  if (server.caPem !== undefined) standIn.caPem = server.caPem;
  return standIn;
}

/** A response whose body is not the plain `{errors}` shape (KV v2 deleted version: 404 with the envelope). */
class VaultBody extends Error {
  status: number;
  body: unknown;
  constructor(status: number, body: unknown) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function fakeJwt(r: KubernetesTokenRequest): string {
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  return [
    b64({ alg: 'RS256', kid: 'vault-standin' }),
    b64({
      aud: r.audiences ?? ['https://kubernetes.default.svc.cluster.local'],
      exp: now + r.ttlSeconds,
      iat: now,
      nbf: now,
      iss: 'https://kubernetes.default.svc.cluster.local',
      sub: `system:serviceaccount:${r.kubernetesNamespace}:${r.serviceAccountName}`,
    }),
    randomId(43, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'),
  ].join('.');
}
