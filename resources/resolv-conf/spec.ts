// ResolvConf's spec: the nameservers, search domains and options the host's resolver should use, and who may own it.
import { isIP } from 'node:net';
import { z } from 'zod';
import { dnsName, guestPath, ipAddress, unique } from '../../engine/validate.ts';

export const RESOLV_CONF = '/etc/resolv.conf';
export const MARKER = '# Managed by meshvm';

/** "127.0.0.1", "127.0.0.1:5354" or "[::1]:5354" (the DNS= syntax of resolved.conf(5)); undefined when it is none of them. */
export function parseNameserver(value: string): { address: string; port: number } | undefined {
  if (isIP(value)) return { address: value, port: 53 };
  const match = /^\[([^\]]+)\]:(\d{1,5})$/.exec(value) ?? /^([^:[\]]+):(\d{1,5})$/.exec(value);
  if (!match) return undefined;
  const [whole, address, port] = match as unknown as [string, string, string];
  if (isIP(address) !== (whole.startsWith('[') ? 6 : 4) || Number(port) < 1 || Number(port) > 65535) return undefined;
  return { address, port: Number(port) };
}

const nameserver = z.string().refine((v) => parseNameserver(v) !== undefined, {
  message: 'expected an IP address, optionally with a port: "127.0.0.1", "127.0.0.1:5354", "[::1]:5354"',
});

// resolv.conf(5): glibc ignores an option it does not know, so a typo would pass silently; these are the ones it knows
const FLAG_OPTIONS = [
  'debug',
  'rotate',
  'no-check-names',
  'inet6',
  'edns0',
  'single-request',
  'single-request-reopen',
  'no-tld-query',
  'use-vc',
  'no-reload',
  'trust-ad',
  'no-aaaa',
  'ip6-bytestring',
  'ip6-dotint',
  'no-ip6-dotint',
];
const resolverOption = z.string().refine((v) => FLAG_OPTIONS.includes(v) || /^(ndots|timeout|attempts):\d{1,2}$/.test(v), {
  message: `expected a resolv.conf option: ndots:N, timeout:N, attempts:N or one of ${FLAG_OPTIONS.join(', ')}`,
});

export const resolvConfSpec = z.strictObject({
  /** Names meshvm's drop-ins and hook: /etc/systemd/resolved.conf.d/<name>.conf, /etc/dhcp/dhclient-enter-hooks.d/<name>. */
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]*$/, 'expected lower case letters, digits, "_" or "-" (run-parts skips hook names with dots)')
    .max(64)
    .default('meshvm'),
  /** In order of preference; a port only where systemd-resolved manages the resolver (resolv.conf cannot say one). */
  nameservers: z
    .array(nameserver)
    .min(1, 'list at least one nameserver')
    .superRefine((list, ctx) => {
      const seen = new Map<string, number>();
      for (const [i, value] of list.entries()) {
        const parsed = parseNameserver(value);
        const id = parsed && `${canonicalIp(parsed.address)}#${parsed.port}`;
        if (id && seen.has(id))
          ctx.addIssue({ code: 'custom', path: [i], message: `${value} is listed twice (nameservers[${seen.get(id)}] and nameservers[${i}])` });
        if (id) seen.set(id, i);
      }
    }),
  /** Search domains for single-label names. */
  search: unique(dnsName).default([]),
  /** resolv.conf options (ndots:5, timeout:2, edns0 ...); systemd-resolved cannot carry them. */
  options: unique(resolverOption).default([]),
  /** systemd-resolved only: domains sent to these nameservers (Domains=~cluster.local); also keeps .local names off mDNS. */
  routeDomains: unique(dnsName).default(['cluster.local']),
  /** auto: detect who owns the resolver. resolved: write the drop-in whatever else is there. file: own /etc/resolv.conf (replacing a symlink), with the dhclient hook where dhclient is installed. */
  manage: z.enum(['auto', 'resolved', 'file']).default('auto'),
  /**
   * Keep the host's own upstream nameservers in this file, for a forwarder the resolver now asks (dnsmasq's resolv-file):
   * the given servers; else, where systemd-resolved manages the resolver, a link to its uplink list; else the servers
   * /etc/resolv.conf had before meshvm, saved on the first run and kept after.
   */
  upstream: z.strictObject({ file: guestPath, servers: unique(ipAddress).min(1).optional() }).optional(),
  /**
   * absent: undo it. meshvm's drop-ins, hook and upstream file removed; each file it replaced (/etc/resolv.conf,
   * resolvconf's head and base) put back as it was before meshvm, byte for byte (kept on the first replacement), then the
   * owner told, as when it was set.
   */
  ensure: z.enum(['present', 'absent']).default('present'),
});
export type ResolvConfSpec = z.output<typeof resolvConfSpec>;

/** An IP address in one spelling (IPv6 compressed, lower case), so two spellings of one address compare equal. */
export function canonicalIp(address: string): string {
  return isIP(address) === 6 ? new URL(`http://[${address}]/`).hostname.slice(1, -1) : address;
}
