// WorkloadEntry (networking.istio.io/v1) and the Service selecting it, ensured by server-side apply; the VM's primary address, read from its default route.
import { z } from 'zod';
import { defineResource } from '../engine/resource.ts';
import type { HostReader } from '../engine/host.ts';
import { LEASES, SERVICES, WORKLOAD_ENTRIES, type KubeObject } from '../clients/workload-group.ts';
import {
  annotationMap,
  dnsLabel,
  kubeConnect,
  kubeObjectType,
  labelMap,
  objectName,
  ownedMetadata,
  port,
  presence,
  prune,
  workloadAddress,
  workloadAddressProblem,
  entryFields,
} from './workload-group.ts';

/** The annotation that tells istiod to keep the entry out of load balancing until the agent's probe reports it Healthy. */
export const HEALTH_CHECKS_ANNOTATION = 'proxy.istio.io/health-checks-enabled';

export const workloadEntrySpec = z.strictObject({
  name: objectName,
  namespace: dnsLabel,
  ensure: presence,
  /** Where the mesh reaches this VM: an IPv4 or IPv6 address. */
  address: workloadAddress,
  /** spec.labels (what Services select) and the object's own labels. */
  labels: labelMap.default({}),
  annotations: annotationMap.default({}),
  ...entryFields,
  /** The VM runs a readiness probe (its WorkloadGroup's or mesh config's): istiod sends it traffic only while Healthy. */
  healthChecks: z.boolean().default(false),
  connect: kubeConnect,
});
export type WorkloadEntrySpec = z.output<typeof workloadEntrySpec>;

/** The WorkloadEntry meshvm applies: address, labels, serviceAccount, network, ports; managed-by meshvm. */
export function renderWorkloadEntry(spec: WorkloadEntrySpec): KubeObject {
  const annotations = spec.healthChecks ? { ...spec.annotations, [HEALTH_CHECKS_ANNOTATION]: 'true' } : spec.annotations;
  return prune({
    metadata: ownedMetadata(spec, spec.labels, annotations),
    spec: {
      address: spec.address,
      labels: spec.labels,
      serviceAccount: spec.serviceAccount,
      network: spec.network,
      ports: spec.ports,
      locality: spec.locality,
      weight: spec.weight,
    },
  });
}

export const workloadEntryType = kubeObjectType({ kind: 'workload_entry', api: WORKLOAD_ENTRIES, schema: workloadEntrySpec, render: renderWorkloadEntry });
export const WorkloadEntry = defineResource(workloadEntryType);

// ---- the selector Service: pods reach the VM at <name>.<namespace>.svc ----

export const servicePort = z.strictObject({
  name: dnsLabel,
  port,
  /** The port on the VM; default the same number. */
  targetPort: port.optional(),
  protocol: z.enum(['TCP', 'UDP', 'SCTP']).default('TCP'),
});

export const kubeServiceSpec = z.strictObject({
  name: dnsLabel,
  namespace: dnsLabel,
  ensure: presence,
  /** The labels of the workloads it selects (the WorkloadEntry's spec.labels): at least one, or it would select nothing. */
  selector: labelMap.refine((m) => Object.keys(m).length > 0, 'a selector Service needs at least one label to select (e.g. app: reviews-vm)'),
  ports: z
    .array(servicePort)
    .min(1, 'a Service needs at least one port')
    .superRefine((list, ctx) => {
      const seen = new Set<string>();
      for (const [i, p] of list.entries()) {
        for (const id of [`name ${p.name}`, `port ${p.port}/${p.protocol}`]) {
          if (seen.has(id)) ctx.addIssue({ code: 'custom', path: [i], message: `${id} is listed twice` });
          seen.add(id);
        }
      }
    }),
  labels: labelMap.default({}),
  connect: kubeConnect,
});
export type KubeServiceSpec = z.output<typeof kubeServiceSpec>;

/** A ClusterIP Service selecting the workload's labels; every port field given, so the stored object matches what was sent. */
export function renderKubeService(spec: KubeServiceSpec): KubeObject {
  return prune({
    metadata: ownedMetadata(spec, spec.labels),
    spec: {
      selector: spec.selector,
      ports: spec.ports.map((p) => ({ name: p.name, port: p.port, targetPort: p.targetPort ?? p.port, protocol: p.protocol })),
    },
  });
}

export const kubeServiceType = kubeObjectType({ kind: 'kube_service', api: SERVICES, schema: kubeServiceSpec, render: renderKubeService });
export const KubeService = defineResource(kubeServiceType);

// ---- the VM's primary address ----

export interface DefaultRoute {
  dev: string;
  /** The source address the route names, if it does. */
  prefsrc?: string;
  metric: number;
}

/** `ip -j route show default` (either family): the default routes, lowest metric first. */
export function parseDefaultRoutes(json: string): DefaultRoute[] {
  const routes = parseJsonArray(json, 'ip -j route show default');
  return routes
    .filter((r) => typeof r.dev === 'string' && (r.dst === 'default' || r.dst === undefined))
    .map((r) => ({
      dev: r.dev as string,
      metric: typeof r.metric === 'number' ? r.metric : 0,
      ...(typeof r.prefsrc === 'string' ? { prefsrc: r.prefsrc } : {}),
    }))
    .sort((a, b) => a.metric - b.metric);
}

export interface InterfaceAddress {
  ifname: string;
  family: 4 | 6;
  address: string;
  /** Global scope and not deprecated, tentative or failed DAD. */
  usable: boolean;
  /** An IPv6 privacy address (changes over time: not one to register). */
  temporary: boolean;
}

/** `ip -j addr show [dev X]`: every address of every interface, in order. */
export function parseAddresses(json: string): InterfaceAddress[] {
  return parseJsonArray(json, 'ip -j addr show').flatMap((link) =>
    (Array.isArray(link.addr_info) ? (link.addr_info as Record<string, unknown>[]) : []).flatMap((a) => {
      if ((a.family !== 'inet' && a.family !== 'inet6') || typeof a.local !== 'string') return [];
      const flag = (name: string) => a[name] === true;
      return [
        {
          ifname: String(link.ifname ?? ''),
          family: a.family === 'inet' ? 4 : 6,
          address: a.local,
          usable: a.scope === 'global' && !flag('deprecated') && !flag('tentative') && !flag('dadfailed'),
          temporary: flag('temporary'),
        } as InterfaceAddress,
      ];
    }),
  );
}

function parseJsonArray(json: string, what: string): Record<string, unknown>[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json.trim() === '' ? '[]' : json);
  } catch {
    throw new Error(`\`${what}\` did not print JSON (is iproute2 older than 4.13?): ${json.slice(0, 80)}`);
  }
  if (!Array.isArray(parsed)) throw new Error(`\`${what}\` printed JSON that is not a list`);
  return parsed.filter((x): x is Record<string, unknown> => typeof x === 'object' && x !== null);
}

/**
 * The address the VM's default route leaves from (IPv4 first, then IPv6, unless a family is asked): the route's source
 * address if it names one, else the first usable, non-temporary global address of its device. Reads only (`ip -j`), in
 * the host's network namespace; refused on an offline root, which has no network of its own.
 */
export async function primaryAddress(host: HostReader, family?: 4 | 6): Promise<{ address: string; dev: string }> {
  if (!host.live) throw new Error(`an offline root (${host.root}) has no network to read the VM's address from; give the address`);
  const tried: string[] = [];
  for (const fam of family ? [family] : ([4, 6] as const)) {
    const query = async (argv: string[]) => {
      const out = await host.query(argv);
      if (out.exitCode !== 0) throw new Error(`\`${argv.join(' ')}\` exited ${out.exitCode}: ${out.stderr.trim()}`);
      return out.stdout;
    };
    const [route] = parseDefaultRoutes(await query(['ip', '-j', `-${fam}`, 'route', 'show', 'default']));
    if (!route) {
      tried.push(`no IPv${fam} default route`);
      continue;
    }
    if (route.prefsrc && !workloadAddressProblem(route.prefsrc)) return { address: route.prefsrc, dev: route.dev };
    const addresses = parseAddresses(await query(['ip', '-j', `-${fam}`, 'addr', 'show', 'dev', route.dev])).filter((a) => a.family === fam && a.usable);
    const chosen = addresses.find((a) => !a.temporary) ?? addresses[0];
    if (chosen && !workloadAddressProblem(chosen.address)) return { address: chosen.address, dev: route.dev };
    tried.push(`the IPv${fam} default route leaves from ${route.dev}, which has no usable global IPv${fam} address`);
  }
  throw new Error(`cannot tell the VM's primary address (${tried.join('; ')}); give the address`);
}

// ---- the Lease the fleet view keeps for a VM without a WorkloadEntry: only ever deleted by a declaration (offboard) ----

export const kubeLeaseSpec = z.strictObject({ name: objectName, namespace: dnsLabel, ensure: presence, connect: kubeConnect });
export type KubeLeaseSpec = z.output<typeof kubeLeaseSpec>;

export const kubeLeaseType = kubeObjectType({
  kind: 'kube_lease',
  api: LEASES,
  schema: kubeLeaseSpec,
  render: (spec) => prune({ metadata: ownedMetadata(spec), spec: {} }),
});
export const KubeLease = defineResource(kubeLeaseType);
