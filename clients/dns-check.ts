// Does DNS already answer a record right? Asked of given servers (or the system's) so a converged record costs no Route53 call.
import { Resolver } from 'node:dns/promises';
import type { RecordChange } from './route53.ts';

export interface DnsCheckOptions {
  /** "ip" or "ip:port" ("[v6]:port"); default the system's resolvers. */
  servers?: readonly string[];
  timeoutMs?: number;
}

/**
 * True when the answer matches the values (CNAME target, A/AAAA address set) or, for an alias, the addresses of its
 * target. TTLs are not compared (a cache counts them down). Any failure or mismatch means "ask Route53".
 */
export async function answersRight(record: RecordChange, options: DnsCheckOptions = {}): Promise<boolean> {
  const resolver = new Resolver({ timeout: options.timeoutMs ?? 2000, tries: 1 });
  if (options.servers && options.servers.length > 0) resolver.setServers([...options.servers]);
  const name = record.name.replace(/\.$/, '');
  try {
    if (record.type === 'CNAME') {
      const got = await resolver.resolveCname(name);
      return sameSet(got.map(host), (record.values ?? []).map(host));
    }
    const lookup = record.type === 'AAAA' ? (n: string) => resolver.resolve6(n) : record.type === 'A' ? (n: string) => resolver.resolve4(n) : undefined;
    if (!lookup) return false;
    const got = await lookup(name);
    if (record.alias) {
      const target = await lookup(record.alias.dnsName.replace(/\.$/, ''));
      return target.length > 0 && sameSet(got, target);
    }
    return sameSet(got, record.values ?? []);
  } catch {
    return false;
  } finally {
    resolver.cancel();
  }
}

/** Lower case with a trailing dot; "\052" (as Route53 lists a wildcard) back to "*". */
export function normalizeName(name: string): string {
  const n = name.trim().toLowerCase().replace(/\\052/g, '*');
  return n.endsWith('.') ? n : `${n}.`;
}

const host = (n: string): string => normalizeName(n);

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const x = new Set(a.map((v) => v.toLowerCase()));
  const y = new Set(b.map((v) => v.toLowerCase()));
  return x.size > 0 && x.size === y.size && [...x].every((v) => y.has(v));
}
