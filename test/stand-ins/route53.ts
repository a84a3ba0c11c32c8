// Amazon Route 53 REST/XML API 2013-04-01, as @aws-sdk/client-route-53 v3 calls it through a custom `endpoint` (plain HTTP on loopback).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { delay, Faults, listen, randomId, readBody, recordCall, resetConnection } from './common.ts';
import type { Call, CommonFault } from './common.ts';
import { RateLimit } from './limits.ts';
import { AMZ_DATE_RE, parseAuthorization } from './sigv4.ts';

export interface AliasTarget {
  hostedZoneId: string;
  dnsName: string;
  evaluateTargetHealth: boolean;
}
/** One resource record set; `name` is stored normalised: lower case, trailing dot, "*" as "\052". */
export interface RecordSet {
  name: string;
  type: string;
  ttl?: number;
  values?: string[];
  alias?: AliasTarget;
  setIdentifier?: string;
  weight?: number;
}
export interface HostedZone {
  /** Bare id, e.g. "Z0123456789ABCDEFGHIJ" (responses say "/hostedzone/<id>"). */
  id: string;
  name: string;
  callerReference: string;
  privateZone: boolean;
  comment: string;
  records: RecordSet[];
}
export interface ChangeInfo {
  id: string;
  status: 'PENDING' | 'INSYNC';
  submittedAt: Date;
  comment?: string;
  zoneId: string;
  insyncAt: number;
}

export interface Route53Options {
  port?: number;
  /** Zones to create; each gets the SOA and NS record sets Route 53 creates. */
  zones?: Array<{ name: string; id?: string; private?: boolean; records?: RecordSet[] }>;
  /** How long a change stays PENDING before GetChange reports INSYNC (default 0 ms; the change response itself always says PENDING). */
  changeSyncDelayMs?: number;
  /** Answer PriorRequestNotComplete to a change on a zone whose previous change is still PENDING (default false). */
  rejectWhilePending?: boolean;
  /**
   * The caller's IAM policy: the API actions it may call (e.g. ['ListResourceRecordSets'] for a read-only role); any
   * other action answers 403 AccessDenied as IAM does. Default: every action.
   */
  allowedActions?: readonly string[];
  /**
   * Route 53's API request rate, off by default: the real limit is 5 requests per second per AWS account (all
   * actions together); beyond it HTTP 400 with the XML error Code Throttling, Message "Rate exceeded".
   */
  rateLimit?: { perSecond: number };
}

export type Route53Fault =
  | CommonFault
  /** HTTP 400 Throttling "Rate exceeded". */
  | { kind: 'throttle' }
  /** HTTP 400 PriorRequestNotComplete. */
  | { kind: 'prior-request-not-complete' };

export interface Route53StandIn {
  /** http://127.0.0.1:PORT — pass as `endpoint` to Route53Client. */
  endpoint: string;
  port: number;
  faults: Faults<Route53Fault>;
  /** Every request; `action` is the API action name. */
  calls: Call[];
  zones: Map<string, HostedZone>;
  changes: Map<string, ChangeInfo>;
  /** Next n requests (any action) answer Throttling. */
  throttleNext(n: number): void;
  /** Next n ChangeResourceRecordSets answer PriorRequestNotComplete. */
  priorRequestNotCompleteNext(n: number): void;
  /** Record sets of a zone (by id or name), as ListResourceRecordSets would order them. */
  records(zone: string): RecordSet[];
  /** The caller's IAM policy (see Route53Options.allowedActions); undefined allows every action. Mutable mid-test. */
  allowedActions: Set<string> | undefined;
  stop(): Promise<void>;
}

const NS_URI = 'https://route53.amazonaws.com/doc/2013-04-01/';

class AwsError extends Error {
  status: number;
  code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}
const fail = (status: number, code: string, message: string): never => {
  throw new AwsError(status, code, message);
};

export function normalizeName(name: string): string {
  const n = name.trim().toLowerCase().replace(/\*/g, '\\052');
  return n.endsWith('.') ? n : `${n}.`;
}
const nameKey = (n: string): string[] => n.split('.').reverse();
function compareRecords(a: { name: string; type: string }, b: { name: string; type: string }): number {
  const ka = nameKey(a.name);
  const kb = nameKey(b.name);
  for (let i = 0; i < Math.max(ka.length, kb.length); i++) {
    const x = ka[i];
    const y = kb[i];
    if (x === y) continue;
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    return x < y ? -1 : 1;
  }
  return a.type < b.type ? -1 : a.type > b.type ? 1 : 0;
}

// --- minimal XML (elements + text; attributes ignored) ---
interface XmlNode {
  name: string;
  children: XmlNode[];
  text: string;
}
const decode = (s: string): string =>
  s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (_, e: string) =>
    e[0] === '#'
      ? String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : Number(e.slice(1)))
      : ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[e.toLowerCase()]!,
  );
export const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export function parseXml(src: string): XmlNode {
  const root: XmlNode = { name: '#document', children: [], text: '' };
  const stack = [root];
  for (const m of src.matchAll(/<!--[\s\S]*?-->|<\?[\s\S]*?\?>|<!\[CDATA\[([\s\S]*?)\]\]>|<(\/?)([A-Za-z_][\w.:-]*)[^>]*?(\/?)>|([^<]+)/g)) {
    const top = stack[stack.length - 1]!;
    if (m[1] !== undefined) top.text += m[1];
    else if (m[3] !== undefined) {
      if (m[2] === '/') {
        if (top.name !== m[3] || stack.length === 1) throw new Error(`mismatched </${m[3]}>`);
        stack.pop();
      } else {
        const node: XmlNode = { name: m[3].replace(/^.*:/, ''), children: [], text: '' };
        top.children.push(node);
        if (m[4] !== '/') stack.push(node);
      }
    } else if (m[5] !== undefined) top.text += decode(m[5]);
  }
  if (stack.length !== 1) throw new Error('unclosed element');
  return root;
}
const child = (n: XmlNode | undefined, name: string): XmlNode | undefined => n?.children.find((c) => c.name === name);
const text = (n: XmlNode | undefined, name: string): string | undefined => {
  const c = child(n, name);
  return c === undefined ? undefined : c.text.trim();
};

function recordXml(r: RecordSet): string {
  const parts = [`<Name>${escapeXml(r.name)}</Name>`, `<Type>${r.type}</Type>`];
  if (r.setIdentifier !== undefined) parts.push(`<SetIdentifier>${escapeXml(r.setIdentifier)}</SetIdentifier>`);
  if (r.weight !== undefined) parts.push(`<Weight>${r.weight}</Weight>`);
  if (r.alias) {
    parts.push(
      `<AliasTarget><HostedZoneId>${escapeXml(r.alias.hostedZoneId)}</HostedZoneId><DNSName>${escapeXml(r.alias.dnsName)}</DNSName><EvaluateTargetHealth>${r.alias.evaluateTargetHealth}</EvaluateTargetHealth></AliasTarget>`,
    );
  } else {
    parts.push(
      `<TTL>${r.ttl ?? 300}</TTL>`,
      `<ResourceRecords>${(r.values ?? []).map((v) => `<ResourceRecord><Value>${escapeXml(v)}</Value></ResourceRecord>`).join('')}</ResourceRecords>`,
    );
  }
  return `<ResourceRecordSet>${parts.join('')}</ResourceRecordSet>`;
}
const zoneXml = (z: HostedZone): string =>
  `<HostedZone><Id>/hostedzone/${z.id}</Id><Name>${escapeXml(z.name)}</Name><CallerReference>${escapeXml(z.callerReference)}</CallerReference>` +
  `<Config>${z.comment ? `<Comment>${escapeXml(z.comment)}</Comment>` : ''}<PrivateZone>${z.privateZone}</PrivateZone></Config><ResourceRecordSetCount>${z.records.length}</ResourceRecordSetCount></HostedZone>`;
const changeXml = (c: ChangeInfo): string =>
  `<ChangeInfo><Id>/change/${c.id}</Id><Status>${c.status}</Status><SubmittedAt>${c.submittedAt.toISOString()}</SubmittedAt>` +
  `${c.comment === undefined ? '' : `<Comment>${escapeXml(c.comment)}</Comment>`}</ChangeInfo>`;

/** Parses one <ResourceRecordSet> element of a change. */
function parseRecordSet(n: XmlNode | undefined): RecordSet {
  const name = text(n, 'Name');
  const type = text(n, 'Type');
  if (!n || !name || !type) return fail(400, 'InvalidInput', 'Invalid request: ResourceRecordSet requires Name and Type');
  const r: RecordSet = { name: normalizeName(name), type: type.toUpperCase() };
  const ttl = text(n, 'TTL');
  const records = child(n, 'ResourceRecords');
  const alias = child(n, 'AliasTarget');
  const setId = text(n, 'SetIdentifier');
  const weight = text(n, 'Weight');
  if (setId !== undefined) r.setIdentifier = setId;
  if (weight !== undefined) r.weight = Number(weight);
  if (ttl !== undefined) r.ttl = Number(ttl);
  if (records) r.values = records.children.filter((c) => c.name === 'ResourceRecord').map((c) => text(c, 'Value') ?? '');
  if (alias)
    r.alias = {
      hostedZoneId: text(alias, 'HostedZoneId') ?? '',
      dnsName: normalizeName(text(alias, 'DNSName') ?? ''),
      evaluateTargetHealth: text(alias, 'EvaluateTargetHealth') === 'true',
    };
  const plain = r.ttl !== undefined && r.values !== undefined && r.values.length > 0;
  if (Boolean(r.alias) === plain) {
    return fail(
      400,
      'InvalidInput',
      `Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and ResourceRecords], or TrafficPolicyInstanceId], but found ${r.alias ? 'more than one' : 'none'} in Change with [Name=${r.name}, Type=${r.type}, SetIdentifier=${r.setIdentifier ?? 'null'}]`,
    );
  }
  return r;
}

const sameSet = (a: RecordSet, b: RecordSet): boolean => a.name === b.name && a.type === b.type && a.setIdentifier === b.setIdentifier;
const sameValues = (a: RecordSet, b: RecordSet): boolean =>
  a.ttl === b.ttl &&
  a.weight === b.weight &&
  JSON.stringify([...(a.values ?? [])].sort()) === JSON.stringify([...(b.values ?? [])].sort()) &&
  JSON.stringify(a.alias ?? null) === JSON.stringify(b.alias ?? null);

/** Applies a batch to a copy of the zone's records: all changes or none (InvalidChangeBatch lists every problem). */
function applyBatch(zone: HostedZone, changes: Array<{ action: string; record: RecordSet }>): RecordSet[] {
  const records = zone.records.map((r) => ({ ...r }));
  const errors: string[] = [];
  for (const { action, record: r } of changes) {
    const label = `[name='${r.name}', type='${r.type}'${r.setIdentifier === undefined ? '' : `, set-identifier='${r.setIdentifier}'`}]`;
    if (r.name !== zone.name && !r.name.endsWith(`.${zone.name}`)) {
      errors.push(`RRSet with DNS name ${r.name} is not permitted in zone ${zone.name}`);
      continue;
    }
    const i = records.findIndex((x) => sameSet(x, r));
    if (action === 'DELETE') {
      if (i < 0) errors.push(`Tried to delete resource record set ${label} but it was not found`);
      else if (!sameValues(records[i]!, r)) errors.push(`Tried to delete resource record set ${label} but the values provided do not match the current values`);
      else records.splice(i, 1);
      continue;
    }
    if (action === 'CREATE' && i >= 0) {
      errors.push(`Tried to create resource record set ${label} but it already exists`);
      continue;
    }
    if (r.type === 'CNAME' && r.name === zone.name) {
      errors.push(`RRSet of type CNAME with DNS name ${r.name} is not permitted at apex in zone ${zone.name}`);
      continue;
    }
    const conflict = records.some((x) => x.name === r.name && x.type !== r.type && (x.type === 'CNAME' || r.type === 'CNAME'));
    if (conflict) {
      errors.push(
        `RRSet of type ${r.type} with DNS name ${r.name} is not permitted as it conflicts with other records with the same DNS name in zone ${zone.name}`,
      );
      continue;
    }
    if (i >= 0) records[i] = r;
    else records.push(r);
  }
  if (errors.length > 0) fail(400, 'InvalidChangeBatch', `[${errors.join(', ')}]`);
  return records.sort(compareRecords);
}

export async function startRoute53(opts: Route53Options = {}): Promise<Route53StandIn> {
  const zones = new Map<string, HostedZone>();
  const changes = new Map<string, ChangeInfo>();
  const faults = new Faults<Route53Fault>();
  const calls: Call[] = [];
  const syncDelay = opts.changeSyncDelayMs ?? 0;
  const accountRate = opts.rateLimit ? new RateLimit(opts.rateLimit.perSecond) : undefined;

  for (const z of opts.zones ?? []) {
    const name = normalizeName(z.name);
    const id = z.id ?? `Z${randomId(20)}`;
    const soaNs = [
      { name, type: 'NS', ttl: 172800, values: ['ns-1.awsdns-01.org.', 'ns-2.awsdns-02.co.uk.', 'ns-3.awsdns-03.com.', 'ns-4.awsdns-04.net.'] },
      { name, type: 'SOA', ttl: 900, values: ['ns-1.awsdns-01.org. awsdns-hostmaster.amazon.com. 1 7200 900 1209600 86400'] },
    ];
    const records = [...soaNs, ...(z.records ?? []).map((r) => ({ ...r, name: normalizeName(r.name), type: r.type.toUpperCase() }))].sort(compareRecords);
    zones.set(id, { id, name, callerReference: randomUUID(), privateZone: z.private ?? false, comment: '', records });
  }

  const zoneOf = (id: string): HostedZone =>
    zones.get(id.replace(/^\/?hostedzone\//, '')) ?? fail(404, 'NoSuchHostedZone', `No hosted zone found with ID: ${id}`);
  const statusOf = (c: ChangeInfo): ChangeInfo => {
    if (c.status === 'PENDING' && Date.now() >= c.insyncAt) c.status = 'INSYNC';
    return c;
  };

  function listRecordSets(zoneId: string, q: URLSearchParams): string {
    const zone = zoneOf(zoneId);
    const startName = q.get('name');
    const startType = q.get('type')?.toUpperCase();
    if (startType !== undefined && startName === null)
      return fail(400, 'InvalidInput', 'The input is not valid: type may be specified only together with name');
    const max = Math.min(Number(q.get('maxitems') ?? 300) || 300, 300);
    const start = startName === null ? undefined : { name: normalizeName(startName), type: startType ?? '' };
    const from = start === undefined ? zone.records : zone.records.filter((r) => compareRecords(r, start) >= 0);
    const page = from.slice(0, max);
    const next = from[max];
    return (
      `<ListResourceRecordSetsResponse xmlns="${NS_URI}"><ResourceRecordSets>${page.map(recordXml).join('')}</ResourceRecordSets>` +
      `<IsTruncated>${next !== undefined}</IsTruncated>` +
      (next ? `<NextRecordName>${escapeXml(next.name)}</NextRecordName><NextRecordType>${next.type}</NextRecordType>` : '') +
      `<MaxItems>${max}</MaxItems></ListResourceRecordSetsResponse>`
    );
  }

  function changeRecordSets(zoneId: string, body: string): string {
    const zone = zoneOf(zoneId);
    let doc: XmlNode;
    try {
      doc = parseXml(body);
    } catch (err) {
      return fail(400, 'MalformedInput', `Unexpected XML: ${String(err)}`);
    }
    const req = child(doc, 'ChangeResourceRecordSetsRequest');
    const batch = child(req, 'ChangeBatch');
    if (!batch) return fail(400, 'MalformedInput', 'ChangeBatch is not valid, expected ChangeResourceRecordSetsRequest');
    const list = (child(batch, 'Changes')?.children ?? [])
      .filter((c) => c.name === 'Change')
      .map((c) => {
        const action = text(c, 'Action') ?? '';
        if (!['CREATE', 'UPSERT', 'DELETE'].includes(action))
          fail(400, 'InvalidInput', `Invalid request: Action "${action}" is not one of CREATE, DELETE, UPSERT`);
        return { action, record: parseRecordSet(child(c, 'ResourceRecordSet')) };
      });
    if (list.length === 0) return fail(400, 'InvalidInput', 'Invalid request: ChangeBatch must contain at least one Change');
    if (opts.rejectWhilePending && [...changes.values()].some((c) => c.zoneId === zone.id && statusOf(c).status === 'PENDING')) {
      return fail(400, 'PriorRequestNotComplete', 'The request was rejected because Route 53 was still processing a prior request.');
    }
    zone.records = applyBatch(zone, list);
    const now = Date.now();
    const info: ChangeInfo = { id: `C${randomId(20)}`, status: 'PENDING', submittedAt: new Date(now), zoneId: zone.id, insyncAt: now + syncDelay };
    const comment = text(batch, 'Comment');
    if (comment !== undefined) info.comment = comment;
    changes.set(info.id, info);
    return `<ChangeResourceRecordSetsResponse xmlns="${NS_URI}">${changeXml(info)}</ChangeResourceRecordSetsResponse>`;
  }

  function listZonesByName(q: URLSearchParams): string {
    const dnsName = q.get('dnsname');
    const max = Number(q.get('maxitems') ?? 100) || 100;
    const sorted = [...zones.values()].sort((a, b) => compareRecords({ name: a.name, type: a.id }, { name: b.name, type: b.id }));
    const from = dnsName === null ? sorted : sorted.filter((z) => compareRecords({ name: z.name, type: '' }, { name: normalizeName(dnsName), type: '' }) >= 0);
    const page = from.slice(0, max);
    const next = from[max];
    return (
      `<ListHostedZonesByNameResponse xmlns="${NS_URI}"><HostedZones>${page.map(zoneXml).join('')}</HostedZones>` +
      (dnsName === null ? '' : `<DNSName>${escapeXml(normalizeName(dnsName))}</DNSName>`) +
      `<IsTruncated>${next !== undefined}</IsTruncated>` +
      (next ? `<NextDNSName>${escapeXml(next.name)}</NextDNSName><NextHostedZoneId>/hostedzone/${next.id}</NextHostedZoneId>` : '') +
      `<MaxItems>${max}</MaxItems></ListHostedZonesByNameResponse>`
    );
  }

  /** Returns [action, response XML]. */
  function route(method: string, path: string, q: URLSearchParams, body: string): [string, string] {
    let m = /^\/2013-04-01\/hostedzone\/([^/]+)\/rrset\/?$/.exec(path);
    if (m) {
      if (method === 'GET') return ['ListResourceRecordSets', listRecordSets(decodeURIComponent(m[1]!), q)];
      if (method === 'POST') return ['ChangeResourceRecordSets', changeRecordSets(decodeURIComponent(m[1]!), body)];
    }
    m = /^\/2013-04-01\/change\/([^/]+)$/.exec(path);
    if (m && method === 'GET') {
      const id = decodeURIComponent(m[1]!).replace(/^\/?change\//, '');
      const c = changes.get(id) ?? fail(404, 'NoSuchChange', `A change with the specified change ID does not exist: ${id}`);
      return ['GetChange', `<GetChangeResponse xmlns="${NS_URI}">${changeXml(statusOf(c))}</GetChangeResponse>`];
    }
    if (path === '/2013-04-01/hostedzonesbyname' && method === 'GET') return ['ListHostedZonesByName', listZonesByName(q)];
    if (path === '/2013-04-01/hostedzone' && method === 'GET') {
      const all = [...zones.values()];
      return [
        'ListHostedZones',
        `<ListHostedZonesResponse xmlns="${NS_URI}"><HostedZones>${all.map(zoneXml).join('')}</HostedZones><Marker></Marker><IsTruncated>false</IsTruncated><MaxItems>100</MaxItems></ListHostedZonesResponse>`,
      ];
    }
    m = /^\/2013-04-01\/hostedzone\/([^/]+)$/.exec(path);
    if (m && method === 'GET') {
      const z = zoneOf(decodeURIComponent(m[1]!));
      const ns = z.records.find((r) => r.name === z.name && r.type === 'NS')?.values ?? [];
      return [
        'GetHostedZone',
        `<GetHostedZoneResponse xmlns="${NS_URI}">${zoneXml(z)}<DelegationSet><NameServers>${ns.map((n) => `<NameServer>${escapeXml(n.replace(/\.$/, ''))}</NameServer>`).join('')}</NameServers></DelegationSet></GetHostedZoneResponse>`,
      ];
    }
    return fail(404, 'UnknownOperationException', `No such operation: ${method} ${path}`);
  }

  /** Action name from the URL alone, for fault matching and the call log before the request is served. */
  const actionOf = (method: string, path: string): string | undefined => {
    if (/\/rrset\/?$/.test(path)) return method === 'POST' ? 'ChangeResourceRecordSets' : 'ListResourceRecordSets';
    if (/^\/2013-04-01\/change\//.test(path)) return 'GetChange';
    if (path === '/2013-04-01/hostedzonesbyname') return 'ListHostedZonesByName';
    if (path === '/2013-04-01/hostedzone') return 'ListHostedZones';
    if (/^\/2013-04-01\/hostedzone\/[^/]+$/.test(path)) return 'GetHostedZone';
    return undefined;
  };

  async function handle(req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://route53');
    const method = req.method ?? 'GET';
    const requestId = randomUUID();
    const call = recordCall(calls, req, res, url);
    const action = actionOf(method, url.pathname);
    if (action !== undefined) call.action = action;
    const send = (status: number, xml: string): void => {
      const body = `<?xml version="1.0"?>\n${xml}`;
      res.writeHead(status, { 'content-type': 'text/xml', 'content-length': String(Buffer.byteLength(body)), 'x-amzn-requestid': requestId });
      res.end(body);
    };
    const sendError = (e: AwsError): void =>
      send(
        e.status,
        `<ErrorResponse xmlns="${NS_URI}"><Error><Type>${e.status >= 500 ? 'Receiver' : 'Sender'}</Type><Code>${e.code}</Code><Message>${escapeXml(e.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`,
      );
    const { delayMs, fault } = faults.take(action === undefined ? { method, path: url.pathname } : { method, path: url.pathname, action });
    if (!(await delay(delayMs, signal))) return;
    if (fault) call.fault = fault.kind;
    if (fault?.kind === 'reset') return resetConnection(res);
    if (fault?.kind === 'status') return sendError(new AwsError(fault.status ?? 500, 'InternalFailure', 'We encountered an internal error. Please try again.'));
    if (fault?.kind === 'throttle') return sendError(new AwsError(400, 'Throttling', 'Rate exceeded'));
    if (accountRate && accountRate.take() > 0) {
      call.limited = true;
      return sendError(new AwsError(400, 'Throttling', 'Rate exceeded'));
    }
    if (fault?.kind === 'prior-request-not-complete') {
      return sendError(new AwsError(400, 'PriorRequestNotComplete', 'The request was rejected because Route 53 was still processing a prior request.'));
    }
    try {
      const body = (await readBody(req)).toString('utf8');
      const auth = req.headers['authorization'];
      if (auth === undefined) return sendError(new AwsError(403, 'MissingAuthenticationToken', 'Missing Authentication Token'));
      const parsed = parseAuthorization(auth);
      if (parsed?.service !== 'route53' || !AMZ_DATE_RE.test(String(req.headers['x-amz-date'] ?? ''))) {
        return sendError(
          new AwsError(
            403,
            'IncompleteSignature',
            `Authorization header requires a valid AWS4-HMAC-SHA256 signature for service route53 and an X-Amz-Date header. Authorization=${auth.split(' ')[0]}`,
          ),
        );
      }
      const allowed = standIn.allowedActions;
      if (allowed && action !== undefined && !allowed.has(action)) {
        const resource = /\/hostedzone\/([^/]+)/.exec(url.pathname)?.[1];
        return sendError(
          new AwsError(
            403,
            'AccessDenied',
            `User: arn:aws:sts::123456789012:assumed-role/mesh-vm/i-0123456789abcdef0 is not authorized to perform: route53:${action} on resource: arn:aws:route53:::${resource ? `hostedzone/${resource}` : 'change/*'} because no identity-based policy allows the route53:${action} action`,
          ),
        );
      }
      const [, xml] = route(method, url.pathname, url.searchParams, body);
      send(200, xml);
    } catch (err) {
      if (err instanceof AwsError) return sendError(err);
      throw err;
    }
  }

  const server = await listen(handle, opts.port === undefined ? {} : { port: opts.port });
  const standIn: Route53StandIn = {
    allowedActions: opts.allowedActions ? new Set(opts.allowedActions) : undefined,
    endpoint: server.url,
    port: server.port,
    faults,
    calls,
    zones,
    changes,
    throttleNext: (n) => void faults.inject({ kind: 'throttle', times: n }),
    priorRequestNotCompleteNext: (n) => void faults.inject({ kind: 'prior-request-not-complete', action: 'ChangeResourceRecordSets', times: n }),
    records(zone) {
      const z = zones.get(zone) ?? [...zones.values()].find((x) => x.name === normalizeName(zone));
      return z ? z.records.map((r) => ({ ...r })) : [];
    },
    stop: () => server.stop(),
  };
  return standIn;
}
