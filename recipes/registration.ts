// Recipe registration: the mesh can call the VM. auto: a WorkloadGroup istiod registers the VM into; manual: a WorkloadEntry for it; optionally a Service selecting it.
import { z } from 'zod';
import { defineRecipe, type PublishContext, type RecipeContext, type UndoContext } from '../engine/recipe.ts';
import type { RunStatus } from '../engine/run-status.ts';
import { KubeLease, WorkloadEntry, KubeService, primaryAddress, servicePort } from '../resources/workload-entry.ts';
import {
  annotationMap,
  dnsLabel,
  labelMap,
  locality,
  objectName,
  portMap,
  probe,
  WorkloadGroup,
  weight,
  workloadAddress,
  type KubeConnect,
} from '../resources/workload-group.ts';
import {
  MANAGED_BY_LABEL,
  LEASES,
  MANAGED_BY_VALUE,
  managedByMeshvm,
  readObject,
  SERVICES,
  WORKLOAD_ENTRIES,
  WORKLOAD_GROUPS,
  type KubeObject,
} from '../clients/workload-group.ts';
import type { Declared } from '../engine/resource.ts';
import { clusterAttribute, cluster, type ClusterAttribute } from './cluster.ts';
import { flow, workload, type Workload } from './mesh.ts';
import { autoEntryName, registrationChecks, sidecarAddress } from './checks/registration.ts';
// the fleet view's client is loaded when a converge publishes, not at start-up
import type { FleetTarget } from '../clients/fleet-view.ts';

export const registrationMode = z.enum(['auto', 'manual', 'none']);
export type RegistrationMode = z.output<typeof registrationMode>;

const settings = z.strictObject({
  /** auto: istiod registers the VM when its sidecar connects (a WorkloadGroup); manual: meshvm writes its WorkloadEntry; none. Default: auto for the istiod flow, none for classic. */
  mode: registrationMode.optional(),
  /** absent: delete what meshvm made (only objects labelled app.kubernetes.io/managed-by: meshvm). */
  ensure: z.enum(['present', 'absent']).default('present'),
  /** manual: the WorkloadEntry's name; default <workload name>-<address> (":" as "-"), as istiod names the entries it registers. */
  entryName: objectName.optional(),
  /** manual: the address the mesh reaches this VM at; default the source address of its default route. */
  address: workloadAddress.optional(),
  /** manual, no address given: which default route to read (default IPv4, then IPv6). */
  family: z.enum(['ipv4', 'ipv6']).optional(),
  /** Port name → number; default the workload's ports, named port-<number>. */
  ports: portMap.optional(),
  /** Labels besides the workload's (the entries get them; a selector Service selects them). */
  labels: labelMap.default({}),
  annotations: annotationMap.default({}),
  locality: locality.optional(),
  weight: weight.optional(),
  /** The readiness probe (Istio's schema: httpGet, tcpSocket or exec); with it istiod sends traffic only while the VM is Healthy. */
  probe: probe.optional(),
  /** A Service selecting the VM's labels, so pods reach it at <name>.<namespace>.svc; ports default to the registration's. */
  service: z
    .strictObject({
      name: dnsLabel.optional(),
      ports: z.array(servicePort).min(1).optional(),
    })
    .optional(),
});

/** `registration: auto` or `registration: { mode: manual, address: 10.0.0.5, ... }`. */
export const registrationAttribute = z.preprocess((v) => (typeof v === 'string' ? { mode: v } : v), settings);
export type Registration = z.output<typeof settings>;

/** The mode in effect: the one given, else auto for the istiod flow and none for classic. */
export function resolveMode(a: { flow?: 'classic' | 'istiod' | undefined; registration?: Registration | undefined }): RegistrationMode {
  return a.registration?.mode ?? (a.flow === 'istiod' ? 'auto' : 'none');
}

/**
 * The WorkloadGroup the sidecar asks istiod to register it into (ISTIO_META_AUTO_REGISTER_GROUP), or undefined when
 * registration is not auto. For cluster-env and the mesh config.
 */
export function autoRegisterGroup(a: {
  flow?: 'classic' | 'istiod' | undefined;
  workload?: Pick<Workload, 'name'> | undefined;
  registration?: Registration | undefined;
}): string | undefined {
  if (resolveMode(a) !== 'auto' || a.registration?.ensure === 'absent' || !a.workload) return undefined;
  return a.workload.name;
}

/**
 * The proxy metadata registration needs: auto, ISTIO_META_AUTO_REGISTER_GROUP=<group>; manual, ISTIO_META_WORKLOAD_ENTRY=
 * <entry> (istiod ≥ 1.19 then knows which entry the agent's health reports are for). Needs the entry's address when
 * manual and no entryName is given.
 */
export function registrationProxyMetadata(a: {
  flow?: 'classic' | 'istiod' | undefined;
  workload?: Pick<Workload, 'name'> | undefined;
  registration?: Registration | undefined;
  address?: string | undefined;
}): Record<string, string> {
  const group = autoRegisterGroup(a);
  if (group) return { ISTIO_META_AUTO_REGISTER_GROUP: group };
  if (resolveMode(a) !== 'manual' || a.registration?.ensure === 'absent' || !a.workload) return {};
  const address = a.registration?.address ?? a.address;
  const name = a.registration?.entryName ?? (address ? entryName(a.workload.name, address) : undefined);
  return name ? { ISTIO_META_WORKLOAD_ENTRY: name } : {};
}

/** <workload>-<address>, ":" of an IPv6 address as "-" (istiod's own naming of the entries it registers). */
export function entryName(workloadName: string, address: string): string {
  return `${workloadName}-${address.replaceAll(':', '-')}`;
}

/** The registration's ports: the ones given, else the workload's as port-<number>. */
export function registrationPorts(w: Pick<Workload, 'ports'>, r: Pick<Registration, 'ports'> | undefined): Record<string, number> {
  return r?.ports ?? Object.fromEntries(w.ports.map((p) => [`port-${p}`, p]));
}

export const registration = defineRecipe({
  name: 'registration',
  checks: registrationChecks,
  description:
    'Registers the VM as a mesh endpoint: auto (WorkloadGroup, istiod registers it), manual (WorkloadEntry), or none; optionally a selector Service.',
  attributes: z.strictObject({
    flow,
    workload: workload.optional(),
    registration: registrationAttribute.optional(),
    cluster: clusterAttribute.optional(),
  }),
  declare: (a, ctx) => registrationObjects(a, ctx, a.registration?.ensure ?? 'present'),
  /** The fleet seen from Kubernetes: the run's status on this VM's WorkloadEntry (manual: meshvm's; auto: istiod's), else on its Lease. */
  async publish(a, status, ctx) {
    const target = await fleetTarget(a, ctx);
    if (!target || !a.cluster) return undefined;
    const connected = cluster(ctx, a.cluster, 'the fleet view');
    return (await import('../clients/fleet-view.ts')).publishFleetView(ctx.host, target, status, () => connected.kubernetes());
  },
  /**
   * The objects declare applies, deleted: only those carrying meshvm's managed-by label (the resources refuse the others;
   * undo notes them and leaves them). The WorkloadEntry istiod made for an auto-registered VM is istiod's: istiod removes
   * it once the stopped sidecar's grace period ends, and Kubernetes with the WorkloadGroup it belongs to.
   */
  async undo(a, ctx) {
    const objects = await registrationObjects(a, ctx, 'absent');
    const mine: Declared[] = [];
    for (const object of objects) {
      const spec = object.spec as { namespace: string; name: string; connect: KubeConnect; read?: () => Promise<KubeObject | undefined> };
      const api = object.type.kind === 'workload_group' ? WORKLOAD_GROUPS : object.type.kind === 'workload_entry' ? WORKLOAD_ENTRIES : SERVICES;
      const found = spec.read ? await spec.read() : await readObject(await spec.connect(), api, spec.namespace, spec.name);
      if (found && !managedByMeshvm(found))
        ctx.note(`left ${api.kind} ${spec.namespace}/${spec.name}: it does not carry ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`);
      else mine.push(object);
    }
    // the Lease the fleet view made where no entry is published to (registration none)
    const target = await fleetTarget(a, ctx);
    if (target?.api === LEASES && a.cluster) mine.push(...(await leaseUndo(ctx, target, a.cluster)));
    return mine;
  },
});

/** The registration objects for the mode: a WorkloadGroup (auto) or a WorkloadEntry (manual), and the selector Service. */
async function registrationObjects(
  a: { flow: 'classic' | 'istiod'; workload?: Workload | undefined; registration?: Registration | undefined; cluster?: ClusterAttribute | undefined },
  ctx: RecipeContext,
  ensure: 'present' | 'absent',
): Promise<Declared[]> {
  const mode = resolveMode(a);
  if (mode === 'none') return [];
  if (!a.workload) throw new Error(`registration ${mode} needs the "workload" attribute (name, namespace, serviceAccount)`);
  const w = a.workload;
  const r = a.registration ?? settings.parse({});
  const connected = cluster(ctx, a.cluster, 'the mesh registration (WorkloadGroup or WorkloadEntry)');
  const connect: KubeConnect = () => connected.kubernetes();
  const labels = { ...w.labels, ...r.labels };
  const ports = registrationPorts(w, r);
  const common = {
    namespace: w.namespace,
    ensure,
    labels,
    annotations: r.annotations,
    serviceAccount: w.serviceAccount,
    ...(w.network ? { network: w.network } : {}),
    ports,
    ...(r.locality ? { locality: r.locality } : {}),
    ...(r.weight ? { weight: r.weight } : {}),
    connect,
  };
  const service =
    r.service &&
    KubeService({
      name: r.service.name ?? w.name,
      namespace: w.namespace,
      ensure,
      selector: labels,
      ports: r.service.ports ?? Object.entries(ports).map(([name, port]) => ({ name, port })),
      connect,
    });
  if (mode === 'auto') {
    // read as the mesh inputs (cluster-env, certs) read it: one GET per run
    const read = () => connected.object(WORKLOAD_GROUPS, w.namespace, w.name);
    return [WorkloadGroup({ ...common, name: w.name, read, ...(r.probe ? { probe: r.probe } : {}) }), service].filter((d) => d !== undefined);
  }
  const address = r.address ?? (await discoverAddress(ctx, r));
  return [WorkloadEntry({ ...common, name: r.entryName ?? entryName(w.name, address), address, healthChecks: r.probe !== undefined }), service].filter(
    (d) => d !== undefined,
  );
}

async function discoverAddress(ctx: RecipeContext, r: Registration): Promise<string> {
  const family = r.family === 'ipv6' ? 6 : r.family === 'ipv4' ? 4 : undefined;
  try {
    return (await primaryAddress(ctx.host, family)).address;
  } catch (error) {
    throw new Error(`registration.address is not given and ${(error as Error).message.replace(/; give the address$/, '')}; set registration.address`);
  }
}

/**
 * Where the fleet view goes: manual, meshvm's WorkloadEntry; auto, the one istiod registers (named after the sidecar's
 * address, so unknown under --root without ISTIO_SVC_IP); none, a Lease in the workload's namespace named after the VM
 * (its host name). Undefined when there is no workload or no cluster to publish to, or the name cannot be known.
 */
async function fleetTarget(
  a: { flow: 'classic' | 'istiod'; workload?: Workload | undefined; registration?: Registration | undefined; cluster?: ClusterAttribute | undefined },
  ctx: RecipeContext,
): Promise<FleetTarget | undefined> {
  const w = a.workload;
  if (!w || !a.cluster || a.registration?.ensure === 'absent') return undefined;
  const mode = resolveMode(a);
  if (mode === 'manual') {
    const address = a.registration?.entryName ? undefined : (a.registration?.address ?? (await discoverAddress(ctx, a.registration ?? settings.parse({}))));
    return { api: WORKLOAD_ENTRIES, namespace: w.namespace, name: a.registration?.entryName ?? entryName(w.name, address!) };
  }
  if (mode === 'auto') {
    const address = await sidecarAddress(ctx.host);
    return address ? { api: WORKLOAD_ENTRIES, namespace: w.namespace, name: autoEntryName(w.name, address, w.network) } : undefined;
  }
  const name = await vmName(ctx);
  return name ? { api: LEASES, namespace: w.namespace, name } : undefined;
}

/** The VM's name as a Kubernetes object name: its host name (/etc/hostname, else `hostname` on the running machine), lower case. */
async function vmName(ctx: RecipeContext): Promise<string | undefined> {
  let name = (await ctx.host.readFile('/etc/hostname'))?.trim();
  if (!name && ctx.host.live) {
    const result = await ctx.host.query(['hostname']);
    name = result.exitCode === 0 ? result.stdout.trim() : undefined;
  }
  const parsed = objectName.safeParse(name?.toLowerCase());
  return parsed.success ? parsed.data : undefined;
}

/**
 * The Lease the fleet view keeps for this VM in the namespace, ensured absent by offboarding: only one carrying meshvm's
 * managed-by label (another is noted and left).
 */
async function leaseUndo(ctx: UndoContext, target: FleetTarget, config: ClusterAttribute): Promise<Declared[]> {
  const connected = cluster(ctx, config, 'the fleet view');
  const lease = await connected.object(LEASES, target.namespace, target.name);
  if (!lease) return [];
  if (!managedByMeshvm(lease)) {
    ctx.note(`left Lease ${target.namespace}/${target.name}: it does not carry ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`);
    return [];
  }
  return [KubeLease({ namespace: target.namespace, name: target.name, ensure: 'absent', connect: () => connected.kubernetes() })];
}

/**
 * The fleet view of a VM no registration object stands for (the classic flow: the certs recipe calls these): its Lease in
 * the workload's namespace, named after the VM. Nothing without a cluster, a namespace or a known host name.
 */
export const vmLease = {
  async publish(ctx: PublishContext, namespace: string | undefined, config: ClusterAttribute | undefined, status: RunStatus): Promise<string | undefined> {
    const name = namespace && config ? await vmName(ctx) : undefined;
    if (!name || !namespace || !config) return undefined;
    const connected = cluster(ctx, config, 'the fleet view');
    return (await import('../clients/fleet-view.ts')).publishFleetView(ctx.host, { api: LEASES, namespace, name }, status, () => connected.kubernetes());
  },
  async undo(ctx: UndoContext, namespace: string | undefined, config: ClusterAttribute | undefined): Promise<Declared[]> {
    const name = namespace && config ? await vmName(ctx) : undefined;
    return name && namespace && config ? leaseUndo(ctx, { api: LEASES, namespace, name }, config) : [];
  },
};
