// The fleet seen from Kubernetes: a converge's status on the VM's own registration object (its WorkloadEntry, or a Lease
// named after the VM): labels `kubectl get -L` shows, annotations for the rest, a MeshvmConverged condition `kubectl wait` reads.
import type { Host } from '../engine/host.ts';
import type { RunStatus } from '../engine/run-status.ts';
import { ensureStateDir } from '../engine/runner.ts';
import { FLEET_VIEW_FILE } from '../engine/state-paths.ts';
import type { KubernetesClient } from './kubernetes.ts';
import { KubernetesError } from './kubernetes-errors.ts';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, WORKLOAD_ENTRIES, readObject, type KubeObject, type ObjectApi } from './workload-group.ts';

export const LEASES: ObjectApi = { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease' };
/** The field manager of the fleet view's writes: not the registration's (its server-side apply would remove what it does not send). */
export const FLEET_VIEW_MANAGER = 'meshvm-fleet-view';
export const CONDITION_TYPE = 'MeshvmConverged';
/**
 * The last-run time is refreshed at most this often when nothing else changed: below the one-hour "not converged"
 * threshold, so a VM on any timer up to 40 minutes never looks stale, and at most 3 writes an hour per VM however often it runs.
 */
export const HEARTBEAT_SECONDS = 20 * 60;
/** A Lease's duration: not renewed for an hour, the VM has not converged (the threshold of meshvm's alert rules). */
export const LEASE_SECONDS = 3600;

export const LABELS = { version: 'meshvm.io/version', outcome: 'meshvm.io/outcome', changed: 'meshvm.io/changed', drift: 'meshvm.io/drift' } as const;
export const ANNOTATIONS = {
  lastRun: 'meshvm.io/last-run',
  lastSuccess: 'meshvm.io/last-success',
  runlist: 'meshvm.io/runlist',
  resources: 'meshvm.io/resources',
  driftFound: 'meshvm.io/drift-found',
  certificateExpiry: 'meshvm.io/certificate-expiry',
} as const;

export interface FleetCondition {
  type: string;
  status: 'True' | 'False';
  reason: string;
  message: string;
  lastTransitionTime?: string;
}

/** What a run publishes, the last-run time aside (that one is the heartbeat). */
export interface FleetView {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  condition: FleetCondition;
}

/** Where the view goes: the VM's WorkloadEntry (which must exist), or its Lease (created when missing). */
export interface FleetTarget {
  api: ObjectApi;
  namespace: string;
  name: string;
}

/** What the last publish wrote, kept on the VM so a no-op compares locally and asks the API nothing. */
export interface Published {
  target: string;
  view: FleetView;
  at: string;
}

const REASONS: Record<RunStatus['outcome'], string> = {
  changed: 'Converged',
  unchanged: 'Converged',
  failed: 'Failed',
  interrupted: 'Interrupted',
  'would-change': 'Planned',
};

/** A label value Kubernetes accepts: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends. */
export function labelValue(text: string): string {
  return text
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(0, 63)
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
}

/** The view of a run's status. */
export function fleetView(status: RunStatus): FleetView {
  const ok = status.outcome === 'changed' || status.outcome === 'unchanged';
  const r = status.resources;
  const certificates = status.expiries.filter((e) => e.what === 'certificate').map((e) => e.at.getTime());
  const drift = status.drift.join(', ');
  const annotations: Record<string, string> = {
    [ANNOTATIONS.runlist]: status.runlist,
    [ANNOTATIONS.resources]: `${r.total} total, ${r.changed} changed, ${r.failed} failed, ${r.skipped} skipped`,
    // while failing: when it last converged (a success is the last run itself)
    ...(!ok && status.lastSuccessAt && { [ANNOTATIONS.lastSuccess]: status.lastSuccessAt.toISOString() }),
    ...(drift && { [ANNOTATIONS.driftFound]: drift.length > 1000 ? `${drift.slice(0, 997)}...` : drift }),
    ...(certificates.length && { [ANNOTATIONS.certificateExpiry]: new Date(Math.min(...certificates)).toISOString() }),
  };
  const message = ok
    ? `meshvm ${status.meshvm} converged runlist ${status.runlist}: ${r.changed} of ${r.total} resources changed, ${status.drift.length} of them drift`
    : `meshvm ${status.meshvm} runlist ${status.runlist} ${status.outcome}: ${r.failed} of ${r.total} resources failed, ${r.skipped} skipped; the VM's report: /var/lib/meshvm/last-run.json`;
  return {
    labels: {
      [LABELS.version]: labelValue(status.meshvm),
      [LABELS.outcome]: status.outcome,
      [LABELS.changed]: String(r.changed),
      [LABELS.drift]: String(status.drift.length),
    },
    annotations,
    condition: { type: CONDITION_TYPE, status: ok ? 'True' : 'False', reason: REASONS[status.outcome], message },
  };
}

export const targetKey = (t: FleetTarget): string => `${t.api.kind} ${t.namespace}/${t.name}`;

/** True when the last publish said the same thing to the same object and its heartbeat is not due. */
export function upToDate(previous: Published | undefined, target: FleetTarget, view: FleetView, now: Date): boolean {
  if (!previous || previous.target !== targetKey(target) || JSON.stringify(previous.view) !== JSON.stringify(view)) return false;
  const age = (now.getTime() - Date.parse(previous.at)) / 1000;
  return age >= 0 && age < HEARTBEAT_SECONDS;
}

/**
 * Writes the view where it differs from what the object carries: the condition through the status subresource (a
 * read-modify-write with the resourceVersion read: Istio's status.conditions is a plain list, so a merge patch would
 * replace istiod's Healthy condition), labels and annotations as a merge patch by field manager meshvm-fleet-view.
 * Returns the number of writes, or 'missing' when the WorkloadEntry does not exist (istiod has not registered the VM yet).
 */
export async function publishView(k: KubernetesClient, target: FleetTarget, view: FleetView, now: Date): Promise<number | 'missing'> {
  const where = targetKey(target);
  const lastRun = { [ANNOTATIONS.lastRun]: now.toISOString() };
  for (let round = 0; ; round++) {
    const object = await readObject(k, target.api, target.namespace, target.name);
    if (!object) {
      if (target.api !== LEASES) return 'missing';
      if (await createLease(k, target, view, now)) return 1;
      continue; // created meanwhile by another run: read it again
    }
    let writes = 0;
    if (target.api === WORKLOAD_ENTRIES) {
      const status = (object.status ?? {}) as { conditions?: FleetCondition[] };
      const conditions = status.conditions ?? [];
      const index = conditions.findIndex((c) => c.type === CONDITION_TYPE);
      const before = conditions[index];
      if (!before || before.status !== view.condition.status || before.reason !== view.condition.reason || before.message !== view.condition.message) {
        const lastTransitionTime = before?.status === view.condition.status && before.lastTransitionTime ? before.lastTransitionTime : now.toISOString();
        const condition = { ...view.condition, lastTransitionTime };
        const next = index < 0 ? [...conditions, condition] : conditions.map((c, i) => (i === index ? condition : c));
        try {
          await k.call(`updating the status of ${where}`, () =>
            k.custom.replaceNamespacedCustomObjectStatus({
              ...apiParams(target),
              body: { ...object, status: { ...status, conditions: next } },
              fieldManager: FLEET_VIEW_MANAGER,
            }),
          );
        } catch (error) {
          // istiod wrote its Healthy condition between the read and the write: read again, once
          if (error instanceof KubernetesError && error.status === 409 && round === 0) continue;
          throw error;
        }
        writes++;
      }
    }
    const stale = staleMetadata(object, view);
    if (stale || writes > 0 || heartbeatDue(object, now)) {
      const spec = target.api === LEASES ? { spec: leaseSpec(now) } : {};
      // null removes an annotation of ours the view no longer carries (no drift found any more)
      const gone = Object.fromEntries(Object.values(ANNOTATIONS).map((key) => [key, null]));
      await mergePatch(k, target, { metadata: { labels: view.labels, annotations: { ...gone, ...view.annotations, ...lastRun } }, ...spec });
      writes++;
    }
    return writes;
  }
}

/** Labels or annotations the object lacks or carries with another value (the object's other keys are not ours to judge). */
function staleMetadata(object: KubeObject, view: FleetView): boolean {
  const differs = (have: Record<string, string> | undefined, want: Record<string, string>) => Object.entries(want).some(([k, v]) => have?.[k] !== v);
  const ours = new Set<string>(Object.values(ANNOTATIONS));
  const leftOver = Object.keys(object.metadata.annotations ?? {}).some((k) => ours.has(k) && k !== ANNOTATIONS.lastRun && !(k in view.annotations));
  return differs(object.metadata.labels, view.labels) || differs(object.metadata.annotations, view.annotations) || leftOver;
}

function heartbeatDue(object: KubeObject, now: Date): boolean {
  const last = Date.parse(object.metadata.annotations?.[ANNOTATIONS.lastRun] ?? '');
  return !Number.isFinite(last) || (now.getTime() - last) / 1000 >= HEARTBEAT_SECONDS;
}

/** The Lease's spec as the kube-node-lease heartbeats use it: who renews it, when it last did, for how long it holds. */
function leaseSpec(now: Date): Record<string, unknown> {
  return { holderIdentity: 'meshvm', leaseDurationSeconds: LEASE_SECONDS, renewTime: microTime(now) };
}

/** metav1.MicroTime: RFC 3339 with microseconds. */
const microTime = (d: Date): string => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

/** Created by server-side apply, by name: RBAC can then restrict `create` to the VM's Lease (a POST has no name to restrict). */
async function createLease(k: KubernetesClient, target: FleetTarget, view: FleetView, now: Date): Promise<boolean> {
  const body = {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: target.name,
      namespace: target.namespace,
      labels: { ...view.labels, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE },
      annotations: { ...view.annotations, [ANNOTATIONS.lastRun]: now.toISOString() },
    },
    spec: { ...leaseSpec(now), acquireTime: microTime(now) },
  };
  const { PatchStrategy, setHeaderOptions } = await import('@kubernetes/client-node');
  await k.call(`creating ${targetKey(target)} (server-side apply, field manager ${FLEET_VIEW_MANAGER})`, () =>
    k.custom.patchNamespacedCustomObject(
      { ...apiParams(target), body, fieldManager: FLEET_VIEW_MANAGER, force: true },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
    ),
  );
  return true;
}

async function mergePatch(k: KubernetesClient, target: FleetTarget, body: Record<string, unknown>): Promise<void> {
  const { PatchStrategy, setHeaderOptions } = await import('@kubernetes/client-node');
  const options = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
  await k.call(`patching ${targetKey(target)} (the fleet view)`, () =>
    k.custom.patchNamespacedCustomObject({ ...apiParams(target), body, fieldManager: FLEET_VIEW_MANAGER }, options),
  );
}

function apiParams(t: FleetTarget) {
  return { group: t.api.group, version: t.api.version, plural: t.api.plural, namespace: t.namespace, name: t.name };
}

/**
 * Publishes a converge's status on the target unless the last publish (FLEET_VIEW_FILE) said the same and its heartbeat
 * is not due: then it asks the API nothing. Returns what it did, for the run's output.
 */
export async function publishFleetView(host: Host, target: FleetTarget, status: RunStatus, connect: () => Promise<KubernetesClient>): Promise<string> {
  const view = fleetView(status);
  const now = status.finishedAt;
  const previous = await readPublished(host);
  if (upToDate(previous, target, view, now)) return `${targetKey(target)}: the fleet view is as published at ${previous?.at}`;
  const writes = await publishView(await connect(), target, view, now);
  if (writes === 'missing') return `${targetKey(target)} does not exist (yet): the fleet view is published once istiod has registered the VM`;
  const published: Published = { target: targetKey(target), view, at: now.toISOString() };
  await ensureStateDir(host);
  await host.writeFile(FLEET_VIEW_FILE, `${JSON.stringify(published, null, 2)}\n`, { mode: 0o644, backup: false });
  return `${targetKey(target)}: fleet view ${writes ? `published (${writes} write${writes > 1 ? 's' : ''})` : 'already there'}`;
}

async function readPublished(host: Host): Promise<Published | undefined> {
  try {
    const data = JSON.parse((await host.readFile(FLEET_VIEW_FILE)) ?? 'null') as Published | null;
    return data && typeof data.target === 'string' && typeof data.at === 'string' && data.view ? data : undefined;
  } catch {
    return undefined; // damaged: publish again
  }
}
