// The aws recipe's checks: each Route53 record it declared answers in DNS with the declared target (the TTL too, where DNS can tell).
import type { Check, CheckContext } from '../../engine/check.ts';
import type { Route53RecordsSpec } from '../../resources/route53-record.ts';

/** The aws attributes these checks read (spelled here: a type taken from the recipe they are wired into would be circular). */
export interface AwsCheckAttributes {
  mode: 'manage' | 'check';
  dnsServers?: readonly string[] | undefined;
}

export async function awsChecks(a: AwsCheckAttributes, context: CheckContext): Promise<Check[]> {
  const { checkRecordInDns } = await import('../../clients/dns-check.ts');
  const servers = context.resolver ? [context.resolver] : a.dnsServers;
  const via = context.resolver ? `the DNS server ${context.resolver}` : a.dnsServers ? `the DNS server ${a.dnsServers.join(', ')}` : 'the system resolver';
  const checks: Check[] = [];
  for (const d of context.declared) {
    if (d.type.kind !== 'route53_records') continue;
    const spec = d.spec as Route53RecordsSpec;
    for (const r of spec.records) {
      const ttl = r.alias ? undefined : spec.mode === 'check' ? r.ttl : (r.ttl ?? 60);
      const record = { name: r.name, type: r.type, ...(ttl === undefined ? {} : { ttl }), ...(r.alias ? { alias: r.alias } : { values: r.values ?? [] }) };
      const verdict = await checkRecordInDns(record, { timeoutMs: context.timeoutMs, ...(servers ? { servers } : {}) });
      // a cache cannot tell the record's own TTL: the target is what a VM's lookups depend on
      const ok = verdict.verdict === 'right' || (verdict.verdict === 'unsure' && verdict.valuesRight);
      const name = `${r.name.replace(/\.$/, '')} ${r.type}`;
      checks.push({
        check: 'aws',
        ok,
        detail: `${name} ${verdict.detail} (through ${via})`,
        ...(ok
          ? {}
          : {
              fix:
                spec.mode === 'manage'
                  ? `meshvm converge UPSERTs it in hosted zone ${spec.zoneId}; caches keep the old answer for up to its old TTL`
                  : `the record is owned elsewhere (aws.mode is check): fix it there (external-dns: the Service's annotations); meshvm converge names what Route53 holds`,
            }),
      });
    }
  }
  return checks;
}
