// The sidecar's interception checks: the nat chains istio sets up when it starts (ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_REDIRECT), and
// with the DNS proxy on (ISTIO_META_DNS_CAPTURE=true in the sidecar's environment) the redirect of port 53 to it (15053).
// Without iptables (interception: none): no ISTIO chains, ISTIO_CUSTOM_IP_TABLES in the sidecar's environment, the mesh services
// resolving to the egress address.
import type { z } from 'zod';
import type { Check, CheckContext } from '../../engine/check.ts';
import { errorMessage } from '../../engine/errors.ts';
import type { HostReader } from '../../engine/host.ts';
import type { ServiceSpec } from '../../resources/service.ts';
import type { flow } from '../mesh.ts';
import { sidecarEnvironment } from './istiod.ts';
import { lookupFor, resolverName } from './lookup.ts';

/** The sidecar-services attributes ({ flow }), spelled from mesh.ts's schema: a type taken from the recipe it is wired into would be circular. */
export interface SidecarServicesAttributes {
  flow: z.output<typeof flow>;
}

export const ISTIO_NAT_CHAINS = ['ISTIO_INBOUND', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT'] as const;

/**
 * For sidecar-services (in every runlist that runs a sidecar, classic and istiod alike; the interception recipe is istiod's
 * only and optional): when this recipe declared istio.service, its nat chains exist. Only on the live system.
 */
export async function interceptionChecks(_a: SidecarServicesAttributes, context: CheckContext): Promise<Check[]> {
  if (!context.declared.some((d) => d.type.kind === 'service' && (d.spec as ServiceSpec).name === 'istio.service')) return [];
  if (!context.host.live)
    return [{ check: 'interception', ok: true, skipped: true, detail: `not checked under --root ${context.host.root} (the rules live in the running kernel)` }];
  const environment = await sidecarEnvironment(context.host);
  if (environment.ISTIO_CUSTOM_IP_TABLES === 'true')
    return [
      {
        check: 'interception',
        ok: true,
        skipped: true,
        detail: 'ISTIO_CUSTOM_IP_TABLES=true: the sidecar installs no chains (interception: none; the interception recipe checks that mode)',
      },
    ];
  let nat: string;
  try {
    const result = await context.host.query(['iptables-save', '-t', 'nat']);
    if (result.exitCode !== 0) throw new Error(`exit ${result.exitCode}: ${result.stderr.trim()}`);
    nat = result.stdout;
  } catch (error) {
    return [
      {
        check: 'interception',
        ok: false,
        detail: `cannot read the nat table (iptables-save -t nat): ${errorMessage(error)}`,
        fix: 'is iptables installed, and does meshvm verify run as root?',
      },
    ];
  }
  const missing = ISTIO_NAT_CHAINS.filter((chain) => !nat.includes(`:${chain} `));
  const capture = environment.ISTIO_META_DNS_CAPTURE === 'true' ? [dnsCaptureCheck(nat)] : [];
  return [
    {
      check: 'interception',
      ok: missing.length === 0,
      detail: missing.length
        ? `nat chains missing: ${missing.join(', ')}`
        : `the ${ISTIO_NAT_CHAINS.slice(0, -1).join(', ')} and ${ISTIO_NAT_CHAINS.at(-1)} nat chains exist`,
      ...(missing.length ? { fix: 'the istio service sets them up when it starts: systemctl restart istio' } : {}),
    },
    ...capture,
  ];
}

/** The agent's DNS proxy port, where istio-iptables redirects DNS when ISTIO_META_DNS_CAPTURE is true. */
export const DNS_PROXY_PORT = 15053;

/** One nat rule of iptables-save: its chain, protocol, destination port, jump target and REDIRECT port. */
export interface NatRule {
  chain: string;
  protocol?: string | undefined;
  dport?: string | undefined;
  target?: string | undefined;
  toPort?: string | undefined;
}

/** The -A lines of `iptables-save -t nat` (pure); a negated protocol or port is not the protocol or port. */
export function parseNatRules(text: string): NatRule[] {
  const rules: NatRule[] = [];
  for (const line of text.split('\n')) {
    const m = /^-A (\S+) (.*)$/.exec(line.trim());
    if (!m) continue;
    const rest = m[2]!;
    const arg = (flag: string) => new RegExp(`(?:^|\\s)(!\\s+)?${flag} (\\S+)`).exec(rest);
    const plain = (flag: string) => {
      const found = arg(flag);
      return found && !found[1] ? found[2] : undefined;
    };
    rules.push({ chain: m[1]!, protocol: plain('-p'), dport: plain('--dport'), target: plain('-j'), toPort: plain('--to-ports?') });
  }
  return rules;
}

/** The chains reachable from OUTPUT through jumps (OUTPUT itself included). */
function reachableFromOutput(rules: readonly NatRule[]): Set<string> {
  const seen = new Set(['OUTPUT']);
  for (let grew = true; grew; ) {
    grew = false;
    for (const r of rules) {
      if (seen.has(r.chain) && r.target && !seen.has(r.target) && rules.some((x) => x.chain === r.target)) {
        seen.add(r.target);
        grew = true;
      }
    }
  }
  return seen;
}

/** UDP and TCP port 53 redirected to the DNS proxy, by rules that locally sent packets reach (OUTPUT and the chains it jumps to). */
export function dnsCaptureCheck(nat: string): Check {
  const rules = parseNatRules(nat);
  const reachable = reachableFromOutput(rules);
  const redirects = (protocol: string) =>
    rules.some((r) => reachable.has(r.chain) && r.protocol === protocol && r.dport === '53' && r.target === 'REDIRECT' && r.toPort === String(DNS_PROXY_PORT));
  const missing = ['udp', 'tcp'].filter((protocol) => !redirects(protocol));
  return {
    check: 'dns capture',
    ok: missing.length === 0,
    detail: missing.length
      ? `ISTIO_META_DNS_CAPTURE is true, but no nat rule reached from OUTPUT redirects ${missing.join(' or ')} port 53 to the DNS proxy (${DNS_PROXY_PORT})`
      : `udp and tcp port 53 are redirected to the sidecar's DNS proxy (${DNS_PROXY_PORT})`,
    ...(missing.length
      ? { fix: 'istio-iptables installs them when istio starts with ISTIO_META_DNS_CAPTURE=true in cluster.env: systemctl restart istio' }
      : {}),
  };
}

/** What the interception recipe's checks need of its attributes (spelled here: a type taken from the recipe would be circular). */
export interface InterceptionCheckAttributes {
  interception: 'iptables' | 'none';
  meshHosts: string[];
  egressAddress: string;
}

/** The ISTIO_* chains of the nat and mangle tables (iptables-save), or why they could not be read. */
async function istioChains(host: HostReader): Promise<{ chains: string[]; error?: string }> {
  const chains: string[] = [];
  for (const table of ['nat', 'mangle']) {
    try {
      const result = await host.query(['iptables-save', '-t', table]);
      if (result.exitCode !== 0) return { chains, error: `iptables-save -t ${table}: exit ${result.exitCode}: ${result.stderr.trim()}` };
      for (const m of result.stdout.matchAll(/^:(ISTIO_[A-Za-z0-9_]+) /gm)) chains.push(`${table} ${m[1]}`);
    } catch (error) {
      return { chains, error: `iptables-save -t ${table}: ${errorMessage(error)}` };
    }
  }
  return { chains };
}

/** The addresses /etc/hosts gives a name, first line first (pure). */
export function hostsFileAddresses(text: string, name: string): string[] {
  return text
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim().split(/\s+/))
    .filter(([address, ...names]) => address && names.includes(name))
    .map(([address]) => address!);
}

/**
 * interception none: the sidecar's environment says ISTIO_CUSTOM_IP_TABLES=true, no ISTIO chain is in the kernel, and each
 * mesh service resolves to the egress address first (the system resolver; under --root or with --resolver, the root's
 * /etc/hosts, which is where the answer comes from).
 */
export async function noIptablesChecks(a: InterceptionCheckAttributes, context: CheckContext): Promise<Check[]> {
  if (a.interception !== 'none') return [];
  const checks: Check[] = [];
  const environment = await sidecarEnvironment(context.host);
  const custom = environment.ISTIO_CUSTOM_IP_TABLES === 'true';
  checks.push({
    check: 'no iptables',
    ok: custom,
    detail: custom
      ? "ISTIO_CUSTOM_IP_TABLES=true in the sidecar's environment: istio-start.sh installs no chains"
      : `ISTIO_CUSTOM_IP_TABLES is ${JSON.stringify(environment.ISTIO_CUSTOM_IP_TABLES ?? '')} in sidecar.env and cluster.env, not true: the sidecar installs its nat rules when it starts`,
    ...(custom ? {} : { fix: 'converge with the sidecar recipe given interception: none (it writes ISTIO_CUSTOM_IP_TABLES=true to sidecar.env)' }),
  });
  if (!context.host.live)
    checks.push({
      check: 'no iptables',
      ok: true,
      skipped: true,
      detail: `chains not checked under --root ${context.host.root} (they live in the running kernel)`,
    });
  else {
    const found = await istioChains(context.host);
    checks.push(
      found.error
        ? {
            check: 'no iptables',
            ok: false,
            detail: `cannot read the tables: ${found.error}`,
            fix: 'is iptables installed, and does meshvm verify run as root?',
          }
        : {
            check: 'no iptables',
            ok: found.chains.length === 0,
            detail: found.chains.length ? `ISTIO chains present: ${found.chains.join(', ')}` : 'no ISTIO chain in the nat and mangle tables',
            ...(found.chains.length ? { fix: 'meshvm converge removes them (the interception recipe), or: pilot-agent istio-clean-iptables' } : {}),
          },
    );
  }
  const fromHostsFile = !context.host.live || context.resolver !== undefined;
  const hostsText = fromHostsFile ? ((await context.host.readFile('/etc/hosts')) ?? '') : '';
  const lookup = lookupFor({ timeoutMs: context.timeoutMs });
  for (const name of a.meshHosts) {
    const addresses = fromHostsFile ? hostsFileAddresses(hostsText, name) : (await lookup(name)).addresses;
    const ok = addresses[0] === a.egressAddress;
    const where = fromHostsFile ? '/etc/hosts' : resolverName({});
    checks.push({
      check: 'mesh hosts',
      ok,
      detail: ok
        ? `${name} is ${a.egressAddress} (${where}), the proxy's egress listener`
        : `${name} is ${addresses.join(', ') || 'not found'} (${where}), not the egress address ${a.egressAddress}`,
      ...(ok ? {} : { fix: `meshvm converge writes "${a.egressAddress} ${name}" to /etc/hosts; an earlier line for the name wins, remove it` }),
    });
  }
  return checks;
}
