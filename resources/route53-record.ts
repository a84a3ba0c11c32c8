// Route53Records: the records meshvm owns in one hosted zone (CNAME, A, AAAA or alias), or only checks (mode check); DNS asked first, one UPSERT batch per zone.
import { isIP } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import { defineResource, type Changes } from '../engine/resource.ts';
import { secrets } from '../engine/secrets.ts';
import type { HostReader } from '../engine/host.ts';
import type { RecordChange, RecordData, Route53Records as Route53Api } from '../clients/route53.ts';

const recordName = z
  .string()
  .regex(/^(\*\.)?([a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.?$/i, 'expected a DNS name such as istiod.mesh.example.com')
  .transform((n) => n.toLowerCase());

const record = z
  .strictObject({
    name: recordName,
    type: z.enum(['A', 'AAAA', 'CNAME']),
    /** Seconds; default 60 (keep it low for load-balancer names). Not allowed with alias. */
    ttl: z.number().int().min(0).max(2147483647).optional(),
    values: z.array(z.string().min(1)).min(1).optional(),
    /** Route53 alias (A/AAAA only), e.g. to an ELB: its canonical hosted zone id and DNS name. */
    alias: z.strictObject({ hostedZoneId: z.string().min(1), dnsName: recordName, evaluateTargetHealth: z.boolean().default(false) }).optional(),
  })
  .superRefine((r, ctx) => {
    const issue = (message: string, path: string) => ctx.addIssue({ code: 'custom', message, path: [path] });
    if (Boolean(r.values) === Boolean(r.alias)) issue('give exactly one of values and alias', 'values');
    if (r.alias && r.type === 'CNAME') issue('an alias record is type A or AAAA', 'type');
    if (r.alias && r.ttl !== undefined) issue('an alias record takes its TTL from the target; remove ttl', 'ttl');
    if (r.type === 'CNAME' && r.values && r.values.length !== 1) issue('a CNAME has exactly one value', 'values');
    for (const [i, v] of (r.values ?? []).entries()) {
      if (r.type === 'A' && isIP(v) !== 4) ctx.addIssue({ code: 'custom', message: `expected an IPv4 address, not ${JSON.stringify(v)}`, path: ['values', i] });
      if (r.type === 'AAAA' && isIP(v) !== 6)
        ctx.addIssue({ code: 'custom', message: `expected an IPv6 address, not ${JSON.stringify(v)}`, path: ['values', i] });
      if (r.type === 'CNAME' && !recordName.safeParse(v).success)
        ctx.addIssue({ code: 'custom', message: `expected a DNS name as the CNAME's target, not ${JSON.stringify(v)}`, path: ['values', i] });
    }
  });

const credentials = z
  .strictObject({ accessKeyId: z.string().min(1), secretAccessKey: z.string().min(1), sessionToken: z.string().optional() })
  .transform((c) => {
    secrets.add(c.secretAccessKey);
    secrets.add(c.sessionToken);
    return c;
  });

export const route53RecordsSpec = z.strictObject({
  /**
   * manage: meshvm owns the records and UPSERTs what differs. check: something else owns them (external-dns, Terraform);
   * meshvm only reads (route53:ListResourceRecordSets, or DNS alone when it answers right) and fails naming every record
   * that is missing or not as declared. In check mode a record's TTL is compared only when the record declares one.
   */
  mode: z.enum(['manage', 'check']).default('manage'),
  /** The hosted zone id, e.g. Z0123456789ABCDEFGHIJ. */
  zoneId: z
    .string()
    .transform((id) => id.replace(/^\/?hostedzone\//, ''))
    .pipe(z.string().regex(/^[A-Z0-9]{1,32}$/, 'expected a hosted zone id such as Z0123456789ABCDEFGHIJ')),
  records: z
    .array(record)
    .min(1)
    .superRefine((list, ctx) => {
      const seen = new Map<string, string>();
      for (const [i, r] of list.entries()) {
        const name = r.name.replace(/\.$/, '');
        const other = seen.get(name);
        if (other !== undefined && (other === r.type || other === 'CNAME' || r.type === 'CNAME')) {
          ctx.addIssue({ code: 'custom', message: `${name} is declared twice (${other} and ${r.type}); a CNAME cannot share its name`, path: [i, 'name'] });
        }
        seen.set(name, r.type);
      }
    }),
  /**
   * Ask DNS first: no API call for a record DNS answers right, its TTL included (known only from an authoritative
   * answer: a cache counts TTLs down, so a cached answer sends the record to Route53). false = always ask Route53.
   */
  dnsCheck: z
    .union([z.literal(false), z.strictObject({ servers: z.array(z.string()).optional(), timeoutMs: z.number().int().positive().default(2000) })])
    .default({ timeoutMs: 2000 }),
  /** Wait (bounded) for the change to be INSYNC on every Route53 server; false = return once it is accepted. */
  waitForSync: z
    .union([z.literal(false), z.strictObject({ maxSeconds: z.number().positive().default(120), pollSeconds: z.number().positive().default(5) })])
    .default(false),
  region: z.string().default('us-east-1'),
  endpoint: z.url().optional(),
  credentials: credentials.optional(),
  maxAttempts: z.number().int().min(1).max(10).default(6),
  timeoutSeconds: z.number().positive().default(10),
  comment: z.string().max(256).default('meshvm'),
});
export type Route53RecordsSpec = z.output<typeof route53RecordsSpec>;
type RecordSpec = Route53RecordsSpec['records'][number];

/** One entry per record, keyed "name. TYPE": the values (sorted, normalised) or the alias target. */
export type Route53RecordsState = Record<string, RecordData>;

/** "istiod.example.com. CNAME" */
export const recordKey = (r: { name: string; type: string }): string => `${absolute(r.name)} ${r.type}`;
const absolute = (name: string): string => (name.endsWith('.') ? name.toLowerCase() : `${name.toLowerCase()}.`);

/** What Route53 holds when the record is as declared, in the form compared; in check mode without a TTL when none is declared. */
export function desiredData(r: RecordSpec, mode: Route53RecordsSpec['mode'] = 'manage'): RecordData {
  if (r.alias) return { alias: { hostedZoneId: r.alias.hostedZoneId, dnsName: absolute(r.alias.dnsName), evaluateTargetHealth: r.alias.evaluateTargetHealth } };
  const ttl = mode === 'check' ? r.ttl : (r.ttl ?? 60);
  return { ...(ttl === undefined ? {} : { ttl }), values: normalizeValues(r.type, r.values ?? []) };
}

/** Whether what Route53 (or DNS) holds is the declared record: every field the declaration sets, equal. */
export function sameRecord(want: RecordData, have: RecordData | undefined): boolean {
  if (!have) return false;
  if (want.alias || have.alias) return isDeepStrictEqual(want.alias, have.alias);
  return isDeepStrictEqual(want.values, have.values) && (want.ttl === undefined || want.ttl === have.ttl);
}

/** Route53's answer in the same form: CNAME targets lower case with a trailing dot, values sorted. */
export function normalizeData(type: string, d: RecordData): RecordData {
  if (d.alias) return { alias: { ...d.alias, dnsName: absolute(d.alias.dnsName) } };
  return { ...(d.ttl === undefined ? {} : { ttl: d.ttl }), values: normalizeValues(type, d.values ?? []) };
}

function normalizeValues(type: string, values: readonly string[]): string[] {
  return values.map((v) => (type === 'CNAME' ? absolute(v) : v.toLowerCase())).sort();
}

function toChange(r: RecordSpec, mode: Route53RecordsSpec['mode'] = 'manage'): RecordChange {
  if (r.alias) return { name: r.name, type: r.type, alias: r.alias };
  const ttl = mode === 'check' ? r.ttl : (r.ttl ?? 60);
  return { name: r.name, type: r.type, ...(ttl === undefined ? {} : { ttl }), values: r.values ?? [] };
}

async function openRoute53(spec: Route53RecordsSpec): Promise<Route53Api> {
  const { Route53Records } = await import('../clients/route53.ts');
  return new Route53Records({
    region: spec.region,
    maxAttempts: spec.maxAttempts,
    timeoutSeconds: spec.timeoutSeconds,
    ...(spec.endpoint ? { endpoint: spec.endpoint } : {}),
    ...(spec.credentials ? { credentials: spec.credentials } : {}),
  });
}

function show(d: RecordData | undefined): string {
  if (!d) return 'absent';
  if (d.alias) return `alias to ${d.alias.dnsName} (zone ${d.alias.hostedZoneId}${d.alias.evaluateTargetHealth ? ', evaluating target health' : ''})`;
  return `${(d.values ?? []).join(', ')}${d.ttl === undefined ? '' : ` ttl ${d.ttl}`}`;
}

export const route53RecordsType = {
  kind: 'route53_records',
  schema: route53RecordsSpec,
  key: (spec: Route53RecordsSpec) => spec.zoneId,

  async current(_host: HostReader, spec: Route53RecordsSpec): Promise<Route53RecordsState> {
    const state: Route53RecordsState = {};
    let unknown = spec.records;
    if (spec.dnsCheck !== false) {
      const { checkRecordInDns } = await import('../clients/dns-check.ts');
      const check = spec.dnsCheck;
      const verdicts = await Promise.all(
        spec.records.map((r) => checkRecordInDns(toChange(r, spec.mode), { timeoutMs: check.timeoutMs, ...(check.servers ? { servers: check.servers } : {}) })),
      );
      unknown = spec.records.filter((r, i) => {
        const right = verdicts[i]?.verdict === 'right';
        if (right) state[recordKey(r)] = desiredData(r, spec.mode);
        return !right;
      });
    }
    if (unknown.length > 0) {
      const route53 = await openRoute53(spec);
      try {
        for (const r of unknown) {
          const found = await route53.read(spec.zoneId, r.name, r.type);
          if (found) state[recordKey(r)] = normalizeData(r.type, found);
        }
      } finally {
        route53.close();
      }
    }
    // check mode: a record meshvm may not write is a shape it will not repair; plan and converge fail alike, naming it
    if (spec.mode === 'check') {
      const wrong = spec.records.filter((r) => !sameRecord(desiredData(r, 'check'), state[recordKey(r)]));
      if (wrong.length > 0) {
        const lines = wrong.map((r) => `${recordKey(r)} is ${show(state[recordKey(r)])}, not ${show(desiredData(r, 'check'))}`);
        throw new Error(
          `mode check: ${wrong.length} of the ${spec.records.length} record(s) in hosted zone ${spec.zoneId} are not as declared, and meshvm does not write them: ` +
            `${lines.join('; ')}. Fix them where they are owned (external-dns: the Service's annotations; Terraform), or set mode manage to let meshvm UPSERT them`,
        );
      }
    }
    return state;
  },

  changes(spec: Route53RecordsSpec, current: Route53RecordsState | undefined): Changes<Route53RecordsState> {
    const changes: Changes<Route53RecordsState> = {};
    for (const r of spec.records) {
      const key = recordKey(r);
      const want = desiredData(r, spec.mode);
      if (!sameRecord(want, current?.[key])) changes[key] = { from: current?.[key], to: want };
    }
    return changes;
  },

  async apply(_host: unknown, spec: Route53RecordsSpec, changes: Changes<Route53RecordsState>): Promise<void> {
    // unreachable (current throws first); said here so that no path writes in check mode
    if (spec.mode === 'check') throw new Error(`mode check: meshvm does not write the records of hosted zone ${spec.zoneId}`);
    const batch = spec.records.filter((r) => changes[recordKey(r)] !== undefined).map((r) => toChange(r));
    if (batch.length === 0) return;
    const route53 = await openRoute53(spec);
    try {
      const change = await route53.upsert(spec.zoneId, batch, spec.comment);
      if (spec.waitForSync !== false && change.status !== 'INSYNC') await route53.waitInsync(change.id, spec.waitForSync);
    } finally {
      route53.close();
    }
  },

  describe(field: string, change: { from: unknown; to: unknown }): string {
    return `upsert ${field} ${show(change.to as RecordData)} (was ${show(change.from as RecordData | undefined)})`;
  },
};

/** Declares the records of one hosted zone: `Route53Records({ zoneId, records: [{ name, type: 'CNAME', values: [lb] }] })`. */
export const Route53Records = defineResource(route53RecordsType);
