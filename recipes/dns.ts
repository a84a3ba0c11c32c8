// Recipe dns: who answers cluster names on the VM. istio: the sidecar's DNS proxy (nothing declared here); dnsmasq: the
// kubedns drop-in (cluster domain forwarded to an address the VM reaches, control-plane names answered), dnsmasq, the resolver.
import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import { defineRecipe, type RecipeContext } from '../engine/recipe.ts';
import { dnsName, guestPath, ipAddress } from '../engine/validate.ts';
import { isDnsLabel, isDnsName, isIpAddress, RenderError, showValue } from '../engine/values.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { installedByMeshvm, Package } from '../resources/package.ts';
import { purgePackage, removeOwnFiles } from './undo.ts';
import { Service, turnedOnByMeshvm } from '../resources/service.ts';
import { DnsmasqConfig } from '../resources/dnsmasq-config.ts';
import { ResolvConf } from '../resources/resolv-conf/index.ts';
import { clusterAttribute, cluster, type KeptRead } from './cluster.ts';
import { dnsChecks } from './checks/dns.ts';
import { DNSMASQ_SERVICE, managesDnsmasq, namespaceName } from './mesh.ts';

export const controlPlaneEntry = z.strictObject({ name: dnsName, address: z.union([ipAddress, dnsName]) });

/** The names each flow's sidecar looks up, and the LoadBalancer Service (in the system namespace) that answers for each. */
export const CONTROL_PLANE_SERVICES = {
  classic: {
    'istio-pilot': 'istio-pilot-ilb',
    'istio-policy': 'mixer-ilb',
    'istio-telemetry': 'mixer-ilb',
    'istio-citadel': 'citadel-ilb',
    'istio-ca': 'citadel-ilb',
  },
  istiod: { istiod: 'istio-eastwestgateway' },
} as const;

const UPSTREAM_FILE = '/etc/meshvm/upstream-resolv.conf';

export const dnsAttributes = z.strictObject({
  flow: z.enum(['classic', 'istiod']).default('classic'),
  /**
   * istio: the sidecar's DNS proxy answers cluster names (ISTIO_META_DNS_CAPTURE in cluster.env); no dnsmasq, and the
   * resolver is left pointing upstream. dnsmasq: dnsmasq forwards the cluster domain to an address this VM reaches.
   * Default: istio for the istiod flow, dnsmasq for the classic one.
   */
  mode: z.enum(['istio', 'dnsmasq']).optional(),
  /** The cluster DNS address VMs can reach; read from the cluster (dnsService) when not given. */
  clusterDns: ipAddress.optional(),
  /**
   * The VM routes to the cluster's ClusterIPs (a flat network, or routes to the service range): without it, dnsmasq mode
   * refuses to forward to a ClusterIP, which a VM outside the cluster usually cannot reach.
   */
  routesToClusterIps: z.boolean().default(false),
  /** namespace/name of the Service whose address is the cluster DNS for VMs: an internal LoadBalancer (the 0.8 guide's dns-ilb), or kube-dns. */
  dnsService: z
    .string()
    .regex(/^[a-z0-9-]+\/[a-z0-9-]+$/, 'expected namespace/name')
    .default('kube-system/kube-dns'),
  clusterDomain: dnsName.default('svc.cluster.local'),
  /** Control-plane names and addresses; read from the cluster's LoadBalancer Services when not given. */
  controlPlane: z.array(controlPlaneEntry).optional(),
  /** Which LoadBalancer Service answers for which name (defaults per flow). */
  controlPlaneServices: z.record(dnsName, z.string()).optional(),
  systemNamespace: namespaceName.default('istio-system'),
  configFile: guestPath.default('/etc/dnsmasq.d/kubedns'),
  /** Install dnsmasq, run it on 127.0.0.1, and send it what it does not answer (upstream nameservers, saved on the first run). */
  dnsmasq: z
    .strictObject({
      manage: z.boolean().default(true),
      listenAddress: ipAddress.default('127.0.0.1'),
      /** Where other names go; by default the nameservers the host had before meshvm (kept in /etc/meshvm/upstream-resolv.conf). */
      upstreamServers: z.array(ipAddress).optional(),
    })
    .prefault({}),
  /** Point the host's resolver at dnsmasq: auto (detect its owner), resolved, file, or none. */
  resolver: z.enum(['auto', 'resolved', 'file', 'none']).default('auto'),
  /** Search domains for the resolver (e.g. a Route53 zone, see the aws recipe). */
  search: z.array(dnsName).default([]),
  cluster: clusterAttribute.optional(),
});
export type DnsAttributes = z.output<typeof dnsAttributes>;

/** Who answers cluster names: the attribute, else the flow's default (istiod: the sidecar's DNS proxy; classic: dnsmasq). */
export function dnsMode(a: { flow: 'classic' | 'istiod'; mode?: 'istio' | 'dnsmasq' | undefined }): 'istio' | 'dnsmasq' {
  return a.mode ?? (a.flow === 'istiod' ? 'istio' : 'dnsmasq');
}

export const dns = defineRecipe({
  name: 'dns',
  description:
    "Cluster names on the VM: the sidecar's DNS proxy (mode istio, nothing declared), or the kubedns dnsmasq drop-in (setupMeshEx.sh generateDnsmasq) with dnsmasq and the resolver pointed at it.",
  attributes: dnsAttributes,
  // mode istio declares nothing to check here: the sidecar's DNS capture is checked with its interception (sidecar-services)
  checks: async (a, context) => (dnsMode(a) === 'istio' ? [] : dnsChecks(a, context)),
  async declare(a, ctx) {
    // the sidecar's DNS proxy answers (istio-iptables redirects port 53 to it): no dnsmasq, no drop-in, the resolver as it is
    if (dnsMode(a) === 'istio') {
      const unused = (['clusterDns', 'controlPlane', 'search'] as const).filter((key) => a[key] !== undefined && a[key].length !== 0);
      if (unused.length)
        throw new Error(
          `dns.mode is istio (the sidecar's DNS proxy answers cluster names, and the resolver is left as it is), so ${unused.map((key) => `dns.${key}`).join(' and ')} would do nothing: remove ${unused.length > 1 ? 'them' : 'it'}, or set dns.mode: dnsmasq`,
        );
      return [];
    }
    const clusterDns = await reachableClusterDns(ctx, a);
    const controlPlane = a.controlPlane ?? (await discoverControlPlane(ctx, a));
    refuseUnansweredNames(ctx, a, controlPlane);
    const dir = dirOf(a.configFile);
    const dnsmasq = Service(DNSMASQ_SERVICE);
    const notify = a.dnsmasq.manage ? { notifies: dnsmasq } : {};
    const declared = [
      a.dnsmasq.manage && Package({ name: 'dnsmasq' }),
      Directory({ path: dir, mode: 0o755 }),
      File(
        {
          path: a.configFile,
          mode: 0o644,
          owner: 'root',
          group: 'root',
          content: renderKubedns({ ...a, clusterDns, controlPlane }, a.configFile),
          track: true,
          verify: DNSMASQ_TEST,
          verifyOnHost: true,
        },
        notify,
      ),
    ];
    if (!a.dnsmasq.manage) return declared;
    // recipes after this one (certs, for the istiod line in /etc/hosts, which dnsmasq answers from) notify dnsmasq
    managesDnsmasq(ctx);

    // the resolver's owner is detected once, by ResolvConf, which also keeps the host's upstream servers for dnsmasq
    const managed = a.resolver !== 'none';
    const upstream = managed
      ? { from: 'resolv-file' as const, path: UPSTREAM_FILE }
      : a.dnsmasq.upstreamServers
        ? { from: 'servers' as const, servers: a.dnsmasq.upstreamServers.map((server) => ({ server })) }
        : { from: 'resolv-file' as const, path: '/etc/resolv.conf' };
    return [
      ...declared,
      DnsmasqConfig({ path: dnsmasqConfig(a), listenAddresses: [a.dnsmasq.listenAddress], bindInterfaces: true, upstream }, notify),
      dnsmasq,
      managed && ResolvConf(resolverSpec(a)),
    ];
  },
  /**
   * The drop-ins, where they are meshvm's (its record, its marker). dnsmasq: stopped and disabled when meshvm installed it
   * (purged with --purge); else turned off as far as meshvm turned it on (its record), and restarted if it still runs, so
   * it forgets the cluster's names.
   */
  async undo(a, ctx) {
    if (dnsMode(a) === 'istio') return [];
    const installed = a.dnsmasq.manage && (await installedByMeshvm(ctx.host, 'dnsmasq'));
    const on = installed ? { enabled: true, started: true } : await turnedOnByMeshvm(ctx.host, DNSMASQ_SERVICE.name);
    const dnsmasq = Service({
      name: DNSMASQ_SERVICE.name,
      ...(on.enabled && { enabled: false }),
      ...(on.started && { running: false }),
      refresh: 'try-restart',
      track: true,
    });
    const notify = a.dnsmasq.manage && !on.started ? { notifies: dnsmasq } : {};
    return [
      // the resolver first: back to what the machine had before meshvm (byte for byte where meshvm replaced a file)
      a.dnsmasq.manage && a.resolver !== 'none' && ResolvConf({ ...resolverSpec(a), ensure: 'absent' }),
      ...(await removeOwnFiles(ctx, [a.configFile, dnsmasqConfig(a)], notify)),
      ctx.purge && Directory({ path: dirOf(a.configFile), ensure: 'absent' }),
      a.dnsmasq.manage && dnsmasq,
      ...(installed && ctx.purge ? await purgePackage(ctx, 'dnsmasq') : []),
    ];
  },
});

/** The resolver pointed at dnsmasq, as declare sets it and undo takes it back. */
function resolverSpec(a: DnsAttributes) {
  return {
    nameservers: [a.dnsmasq.listenAddress],
    search: a.search,
    routeDomains: [...new Set(['cluster.local', a.clusterDomain, a.systemNamespace])],
    manage: a.resolver as 'auto' | 'resolved' | 'file',
    upstream: { file: UPSTREAM_FILE, ...(a.dnsmasq.upstreamServers && { servers: a.dnsmasq.upstreamServers }) },
  };
}

const dirOf = (file: string) => file.slice(0, file.lastIndexOf('/')) || '/';
/** meshvm's own dnsmasq settings, beside the kubedns drop-in. */
const dnsmasqConfig = (a: Pick<DnsAttributes, 'configFile'>) => `${dirOf(a.configFile)}/meshvm.conf`;

/**
 * The address dnsmasq forwards the cluster domain to: given (dns.clusterDns) or read from dns.dnsService. A ClusterIP (a
 * Service of type ClusterIP, or an address inside the cluster's service range) is refused unless dns.routesToClusterIps
 * says this VM routes to it: a VM outside the cluster usually cannot, and every cluster name would then time out.
 */
async function reachableClusterDns(ctx: RecipeContext, a: DnsAttributes): Promise<string> {
  const fix = (what: string) =>
    `${what}, which a VM outside the cluster usually cannot reach: expose the cluster DNS on an internal LoadBalancer (as the 0.8 guide's kube-system/dns-ilb) and set dns.dnsService to it, or set dns.clusterDns to an address this VM reaches; or, if this VM does route to the cluster's service range, set dns.routesToClusterIps: true`;
  if (a.clusterDns !== undefined) {
    // given: checked against the cluster's service range when the cluster can be asked
    if (a.routesToClusterIps || !a.cluster) return a.clusterDns;
    const ranges = await cluster(ctx, a.cluster, 'the service range dns.clusterDns is checked against')
      .kept('dns:service-cidrs', (await import('../clients/kubernetes.ts')).serviceCidrsRead())
      .catch((error: unknown) => {
        throw new Error(
          `cannot tell whether dns.clusterDns ${a.clusterDns} is a ClusterIP (${error instanceof Error ? error.message : String(error)}); set dns.routesToClusterIps: true if this VM reaches it`,
        );
      });
    const inside = ranges.cidrs.find((range) => cidrContains(range, a.clusterDns!));
    if (inside) throw new Error(fix(`dns.clusterDns ${a.clusterDns} is a ClusterIP (inside the cluster's service range ${inside})`));
    return a.clusterDns;
  }
  const found = await cluster(ctx, a.cluster, 'dns.clusterDns').kept(`dns:${a.dnsService}`, dnsServiceRead(a.dnsService));
  if (found.clusterIp && !a.routesToClusterIps)
    throw new Error(fix(`Service ${a.dnsService} is of type ${found.type}: its address ${found.address} is a ClusterIP`));
  return found.address;
}

/**
 * dnsmasq answers a name with an address: a control-plane name whose address is a hostname (an AWS load balancer's) gets
 * no address= line, and is answered only by the aws recipe's Route53 records. Without that recipe the name would be
 * silently left out and the run would say converged: refused, naming where the hostname came from.
 */
function refuseUnansweredNames(ctx: RecipeContext, a: DnsAttributes, controlPlane: readonly { name: string; address: string }[]): void {
  if (ctx.runlist.recipes.includes('aws')) return;
  const services: Record<string, string> = a.controlPlaneServices ?? CONTROL_PLANE_SERVICES[a.flow];
  const named = controlPlane.flatMap((entry, i) => (isIpAddress(entry.address) ? [] : [{ ...entry, i }]));
  if (named.length === 0) return;
  const where = ({ name, address, i }: (typeof named)[number]) =>
    a.controlPlane
      ? `dns.controlPlane[${i}].address ${showValue(address)}`
      : `${name}: the load balancer of Service ${a.systemNamespace}/${services[name]} answers at ${showValue(address)}`;
  throw new Error(
    `dnsmasq answers names with IP addresses, and ${named.map(where).join('; ')} is a hostname: add the aws recipe (Route53 records for these names), or set dns.controlPlane to IP addresses`,
  );
}

/** Whether a CIDR (as the cluster reports its service range) contains an address; false across families. */
export function cidrContains(range: string, address: string): boolean {
  const [network, bits] = range.split('/') as [string, string | undefined];
  const family = isIP(network);
  if (family === 0 || isIP(address) !== family) return false;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  const list = new BlockList();
  list.addSubnet(network, Number(bits ?? (family === 4 ? 32 : 128)), type);
  return list.check(address, type);
}

// the staged drop-in checked by dnsmasq itself, where dnsmasq is installed (not yet, on a first converge that installs it)
const DNSMASQ_TEST = ['sh', '-c', 'command -v dnsmasq >/dev/null || exit 0; exec dnsmasq --test --conf-file="$1"', 'sh', '%{path}'];

/**
 * The file's lines in the order Istio's docs show them: server=, short names, then the namespaced names. Names answered by a
 * hostname (an AWS load balancer) get no address= line: dnsmasq answers names with addresses (the aws recipe's Route53
 * records answer those). Every value is checked as what its place in a line must be, and refused naming the file and field.
 */
export function renderKubedns(
  a: {
    clusterDns: string;
    clusterDomain: string;
    controlPlane: readonly { name: string; address: string }[];
    systemNamespace: string;
  },
  file = '/etc/dnsmasq.d/kubedns',
): string {
  const must = (field: string, value: string, ok: boolean, what: string) => {
    if (!ok) throw new RenderError(file, field, value, `it is not ${what}`);
  };
  must('clusterDns', a.clusterDns, isIpAddress(a.clusterDns), 'an IP address');
  must('clusterDomain', a.clusterDomain, isDnsName(a.clusterDomain), 'a DNS name');
  must('systemNamespace', a.systemNamespace, isDnsLabel(a.systemNamespace), 'a namespace name (a DNS label)');
  for (const [i, { name, address }] of a.controlPlane.entries()) {
    must(`controlPlane[${i}].name`, name, isDnsName(name), 'a DNS name');
    must(`controlPlane[${i}].address`, address, isIpAddress(address) || isDnsName(address), 'an IP address or a DNS name');
  }
  const answered = a.controlPlane.filter((entry) => isIpAddress(entry.address));
  const lines = [`server=/${a.clusterDomain}/${a.clusterDns}`];
  for (const { name, address } of answered) lines.push(`address=/${name}/${address}`);
  for (const { name, address } of answered) lines.push(`address=/${name}.${a.systemNamespace}/${address}`);
  return lines.join('\n') + '\n';
}

/** The cluster DNS Service's address: a LoadBalancer's IP, else its ClusterIP (flagged, for the caller to refuse); each value checked.
 * Kept between runs: its type, ClusterIP and load-balancer ingress (fetch), checked by parse fresh or kept. */
export function dnsServiceRead(service: string): KeptRead<{ address: string; type: string; clusterIp: boolean }> {
  const [namespace, name] = service.split('/') as [string, string];
  return {
    async fetch(k) {
      const svc = await k.call(`reading Service ${service}`, () => k.core.readNamespacedService({ name, namespace }));
      const ingress = (svc.status?.loadBalancer?.ingress ?? []).map((i) => ({ ...(i.ip && { ip: i.ip }), ...(i.hostname && { hostname: i.hostname }) }));
      return { type: svc.spec?.type ?? 'ClusterIP', ...(svc.spec?.clusterIP !== undefined && { clusterIP: svc.spec.clusterIP }), ingress };
    },
    parse(raw) {
      // as clients/cluster-values.ts words a ClusterValueError (not imported: no client module loads at start-up)
      const checked = (field: string, value: unknown): string => {
        if (typeof value !== 'string' || !isIpAddress(value)) throw new Error(`Service ${service}: ${field}: ${showValue(value)} is not an IP address`);
        return value;
      };
      const svc = raw as { type?: unknown; clusterIP?: unknown; ingress?: unknown } | null;
      if (!svc || typeof svc !== 'object' || typeof svc.type !== 'string' || !Array.isArray(svc.ingress))
        throw new Error(`Service ${service}: ${showValue(raw)} is not a Service's type and addresses`);
      const type = svc.type;
      const ingress = svc.ingress as { ip?: unknown; hostname?: unknown }[];
      if (type === 'LoadBalancer') {
        const ipAt = ingress.findIndex((i) => i?.ip);
        if (ipAt >= 0) return { address: checked(`status.loadBalancer.ingress[${ipAt}].ip`, ingress[ipAt]!.ip), type, clusterIp: false };
        const hostnameAt = ingress.findIndex((i) => i?.hostname);
        if (hostnameAt >= 0)
          throw new Error(
            `Service ${service} answers at ${showValue(ingress[hostnameAt]!.hostname)}, a hostname, not an IP address; dnsmasq needs an IP for server= (status.loadBalancer.ingress[${hostnameAt}].hostname; set dns.clusterDns)`,
          );
        throw new Error(`Service ${service} is a LoadBalancer without an address yet (status.loadBalancer.ingress is empty)`);
      }
      if (type === 'ExternalName') throw new Error(`Service ${service} is of type ExternalName: it has no address dnsmasq could forward to`);
      if (svc.clusterIP === 'None') throw new Error(`Service ${service} is headless (spec.clusterIP None): it has no address dnsmasq could forward to`);
      return { address: checked('spec.clusterIP', svc.clusterIP), type, clusterIp: true };
    },
  };
}

/** Each control-plane name with the address of the LoadBalancer Service that serves it (a hostname on AWS, else an IP). */
export async function discoverControlPlane(ctx: RecipeContext, a: DnsAttributes): Promise<{ name: string; address: string }[]> {
  const services: Record<string, string> = a.controlPlaneServices ?? CONTROL_PLANE_SERVICES[a.flow];
  const wanted = [...new Set(Object.values(services))];
  const { controlPlaneRead } = await import('../clients/kubernetes.ts');
  const found = await cluster(ctx, a.cluster, 'dns.controlPlane').kept(
    `lb:${a.systemNamespace}:${wanted.join(',')}`,
    controlPlaneRead({ namespace: a.systemNamespace, services: wanted }),
  );
  return Object.entries(services).map(([name, service]) => ({ name, address: found.find((f) => f.service === service)!.address }));
}
