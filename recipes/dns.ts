// Recipe dns: /etc/dnsmasq.d/kubedns (cluster domain forwarded, control-plane names answered), dnsmasq itself, the resolver.
import { isIP } from 'node:net';
import { z } from 'zod';
import { defineRecipe, type RecipeContext } from '../engine/recipe.ts';
import { dnsName, guestPath, ipAddress } from '../engine/validate.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { Package } from '../resources/package.ts';
import { Service } from '../resources/service.ts';
import { DnsmasqConfig } from '../resources/dnsmasq-config.ts';
import { ResolvConf } from '../resources/resolv-conf/index.ts';
import { clusterAttribute, cluster } from './cluster.ts';
import { dnsChecks } from './checks/dns.ts';
import { DNSMASQ_SERVICE } from './mesh.ts';

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
  /** The cluster DNS address VMs can reach; read from the cluster (dnsService) when not given. */
  clusterDns: ipAddress.optional(),
  /** namespace/name of the Service whose address is the cluster DNS for VMs: a LoadBalancer (dns-ilb) or kube-dns. */
  dnsService: z
    .string()
    .regex(/^[a-z0-9-]+\/[a-z0-9-]+$/, 'expected namespace/name')
    .default('kube-system/kube-dns'),
  clusterDomain: dnsName.default('svc.cluster.local'),
  /** Control-plane names and addresses; read from the cluster's LoadBalancer Services when not given. */
  controlPlane: z.array(controlPlaneEntry).optional(),
  /** Which LoadBalancer Service answers for which name (defaults per flow). */
  controlPlaneServices: z.record(dnsName, z.string()).optional(),
  systemNamespace: dnsName.default('istio-system'),
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

export const dns = defineRecipe({
  name: 'dns',
  description: 'The kubedns dnsmasq drop-in (setupMeshEx.sh generateDnsmasq), from the cluster or given; dnsmasq and the resolver pointed at it.',
  attributes: dnsAttributes,
  checks: dnsChecks,
  async declare(a, ctx) {
    const clusterDns = a.clusterDns ?? (await cluster(ctx, a.cluster, 'dns.clusterDns').once(`dns:${a.dnsService}`, (k) => dnsAddress(k, a.dnsService)));
    const controlPlane = a.controlPlane ?? (await discoverControlPlane(ctx, a));
    const dir = a.configFile.slice(0, a.configFile.lastIndexOf('/')) || '/';
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
          content: renderKubedns({ ...a, clusterDns, controlPlane }),
          verify: DNSMASQ_TEST,
          verifyOnHost: true,
        },
        notify,
      ),
    ];
    if (!a.dnsmasq.manage) return declared;

    // the resolver's owner is detected once, by ResolvConf, which also keeps the host's upstream servers for dnsmasq
    const managed = a.resolver !== 'none';
    const upstream = managed
      ? { from: 'resolv-file' as const, path: UPSTREAM_FILE }
      : a.dnsmasq.upstreamServers
        ? { from: 'servers' as const, servers: a.dnsmasq.upstreamServers.map((server) => ({ server })) }
        : { from: 'resolv-file' as const, path: '/etc/resolv.conf' };
    return [
      ...declared,
      DnsmasqConfig({ path: `${dir}/meshvm.conf`, listenAddresses: [a.dnsmasq.listenAddress], bindInterfaces: true, upstream }, notify),
      dnsmasq,
      managed &&
        ResolvConf({
          nameservers: [a.dnsmasq.listenAddress],
          search: a.search,
          routeDomains: [...new Set(['cluster.local', a.clusterDomain, a.systemNamespace])],
          manage: a.resolver as 'auto' | 'resolved' | 'file',
          upstream: { file: UPSTREAM_FILE, ...(a.dnsmasq.upstreamServers && { servers: a.dnsmasq.upstreamServers }) },
        }),
    ];
  },
});

// the staged drop-in checked by dnsmasq itself, where dnsmasq is installed (not yet, on a first converge that installs it)
const DNSMASQ_TEST = ['sh', '-c', 'command -v dnsmasq >/dev/null || exit 0; exec dnsmasq --test --conf-file="$1"', 'sh', '%{path}'];

/** The file's lines in the order Istio's docs show them: server=, short names, then the namespaced names (IP addresses only). */
export function renderKubedns(a: {
  clusterDns: string;
  clusterDomain: string;
  controlPlane: readonly { name: string; address: string }[];
  systemNamespace: string;
}): string {
  const answered = a.controlPlane.filter((entry) => isIP(entry.address));
  const lines = [`server=/${a.clusterDomain}/${a.clusterDns}`];
  for (const { name, address } of answered) lines.push(`address=/${name}/${address}`);
  for (const { name, address } of answered) lines.push(`address=/${name}.${a.systemNamespace}/${address}`);
  return lines.join('\n') + '\n';
}

async function dnsAddress(k: import('../clients/kubernetes.ts').KubernetesClient, service: string): Promise<string> {
  const [namespace, name] = service.split('/') as [string, string];
  if (name === 'kube-dns' || name === 'coredns') return k.clusterDns({ namespace, service: name });
  const [lb] = await k.controlPlaneAddresses({ namespace, services: [name] });
  if (lb?.kind !== 'ip') throw new Error(`Service ${service} answers at ${lb?.address}, not an IP address; dnsmasq needs an IP for server=`);
  return lb.address;
}

/** Each control-plane name with the address of the LoadBalancer Service that serves it (a hostname on AWS, else an IP). */
export async function discoverControlPlane(ctx: RecipeContext, a: DnsAttributes): Promise<{ name: string; address: string }[]> {
  const services: Record<string, string> = a.controlPlaneServices ?? CONTROL_PLANE_SERVICES[a.flow];
  const wanted = [...new Set(Object.values(services))];
  const found = await cluster(ctx, a.cluster, 'dns.controlPlane').once(`lb:${a.systemNamespace}:${wanted.join(',')}`, (k) =>
    k.controlPlaneAddresses({ namespace: a.systemNamespace, services: wanted }),
  );
  return Object.entries(services).map(([name, service]) => ({ name, address: found.find((f) => f.service === service)!.address }));
}
