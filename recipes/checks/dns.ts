// The dns recipe's checks: the kubedns names resolve as declared, a cluster name resolves, classic pilot accepts a connection
// (on the running system as istio-proxy, past the sidecar's redirect). istiod is checked by the certs recipe, which knows its address.
import type { z } from 'zod';
import type { Check, CheckContext } from '../../engine/check.ts';
import type { FileSpec } from '../../resources/file.ts';
import type { dnsAttributes } from '../dns.ts';
import { lookupFor, resolverName, tcpConnect, type Lookup } from './lookup.ts';
import { probeConnect, proxyAccount } from './probe.ts';

export interface Kubedns {
  /** address=/name/ip: the names dnsmasq answers itself. */
  answers: { name: string; ip: string }[];
  /** server=/domain/ip: the cluster domain and the cluster DNS it is forwarded to. */
  forward: { domain: string; server: string } | undefined;
}

/** The address= and server= lines of a kubedns drop-in. */
export function parseKubedns(content: string): Kubedns {
  const answers = [...content.matchAll(/^address=\/([^/]+)\/(.+)$/gm)].map((m) => ({ name: m[1]!, ip: m[2]!.trim() }));
  const server = /^server=\/([^/]+)\/(.+)$/m.exec(content);
  return { answers, forward: server ? { domain: server[1]!, server: server[2]!.trim() } : undefined };
}

export async function dnsChecks(a: z.output<typeof dnsAttributes>, context: CheckContext): Promise<Check[]> {
  const file = context.declared.find((d) => d.type.kind === 'file' && (d.spec as FileSpec).path === a.configFile);
  const content = file ? (file.spec as FileSpec).content : undefined;
  if (content === undefined) {
    return [
      {
        check: 'dns',
        ok: false,
        detail: `the dns recipe declared no content for ${a.configFile} in this plan, so there is nothing to check`,
        fix: 'report this: the dns recipe always declares its configFile',
      },
    ];
  }
  const { answers, forward } = parseKubedns(content);
  const lookup = lookupFor(context);
  const via = resolverName(context);
  const dnsmasqFix = `is dnsmasq running with ${a.configFile}, and does ${via} ask it? (systemctl status dnsmasq; resolvectl status or /etc/resolv.conf; meshvm converge)`;
  const checks: Check[] = [];

  // 1. the names dnsmasq answers, through the local resolver
  for (const { name, ip } of answers) {
    const got = await lookup(name);
    const ok = got.addresses.includes(ip);
    const found = got.error ? `an error (${got.error})` : got.addresses.join(', ') || 'nothing';
    checks.push({ check: 'dns', ok, detail: `${name} resolves to ${found}${ok ? '' : `, not ${ip}`}`, ...(ok ? {} : { fix: dnsmasqFix }) });
  }
  // 2. a cluster name, forwarded to the cluster DNS
  if (forward) {
    const name = `kubernetes.default.${forward.domain}`;
    const got = await lookup(name);
    const ok = got.addresses.length > 0;
    checks.push({
      check: 'dns',
      ok,
      detail: `${name} (a cluster name) resolves to ${ok ? got.addresses.join(', ') : `nothing${got.error ? ` (${got.error})` : ''}`}`,
      ...(ok
        ? {}
        : {
            fix: `can this VM reach the cluster DNS at ${forward.server} (port 53, UDP and TCP), and does dnsmasq forward ${forward.domain} to it (${a.configFile})?`,
          }),
    });
  }
  // 3. the control plane answers on its port
  const target = controlPlaneTarget(answers);
  if (target) checks.push(await controlPlaneCheck(target, lookup, context, dnsmasqFix));
  return checks;
}

interface Target {
  name: string;
  port: number;
}

/**
 * Classic: istio-pilot.<ns> on 15011 (mTLS discovery). istiod (istiod.<ns>.svc:15012, from /etc/hosts) is the certs
 * recipe's to check: it declares the mesh config that names it, and tries it as the sidecar.
 */
function controlPlaneTarget(answers: Kubedns['answers']): Target | undefined {
  const pilot = answers.find((a) => a.name.startsWith('istio-pilot.')) ?? answers.find((a) => a.name === 'istio-pilot');
  return pilot && { name: pilot.name, port: 15011 };
}

/** The sidecar's account, whose traffic its redirect lets through (the classic package makes istio-proxy too). */
const PROXY_USER = 'istio-proxy';

async function controlPlaneCheck(target: Target, lookup: Lookup, context: CheckContext, dnsmasqFix: string): Promise<Check> {
  const got = await lookup(target.name);
  const ip = got.addresses[0];
  const where = `${target.name}:${target.port}`;
  if (!ip) {
    return {
      check: 'control plane',
      ok: false,
      detail: `${where} cannot be tried: the name does not resolve through ${resolverName(context)}${got.error ? ` (${got.error})` : ''}`,
      fix: `make ${target.name} resolve first: ${dnsmasqFix}`,
    };
  }
  // on the running system as the sidecar (a connection as root would meet the sidecar's own redirect to Envoy, which accepts
  // anything); with no such account there is no sidecar and no redirect. Under --root, from here.
  const account = context.host.live ? await proxyAccount(context.host, PROXY_USER) : undefined;
  const error = context.host.live
    ? (await probeConnect(context.host, ip, target.port, { as: account, timeoutMs: context.timeoutMs })).error
    : await tcpConnect(ip, target.port, context.timeoutMs);
  const who = account ? ` as ${account.name}` : '';
  return {
    check: 'control plane',
    ok: !error,
    detail: `${where} (${ip}) ${error ? `does not accept a connection${who}: ${error}` : `accepts a connection${who}`}`,
    ...(error
      ? {
          fix: `the name resolves, the port does not answer: open port ${target.port} from this VM to the load balancer at ${ip} (security groups, firewall), and check that the Service behind it has endpoints`,
        }
      : {}),
  };
}
