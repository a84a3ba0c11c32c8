// The fleet seen from Kubernetes: a converge's status on the VM's own registration object (its WorkloadEntry, or a Lease
// named after the VM): labels `kubectl get -L` shows, annotations for the rest, a MeshvmConverged condition `kubectl wait` reads.
import { isDeepStrictEqual } from 'node:util';
import type { Host } from '../engine/host.ts';
import type { RunStatus } from '../engine/run-status.ts';
import { ensureStateDir } from '../engine/runner.ts';
import { FLEET_VIEW_FILE } from '../engine/state-paths.ts';
import type { KubernetesClient } from './kubernetes.ts';
import { KubernetesError } from './kubernetes-errors.ts';
import { LEASES, MANAGED_BY_LABEL, MANAGED_BY_VALUE, readObject, type KubeObject, type ObjectApi } from './workload-group.ts';

export { LEASES };
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
  lastChange: 'meshvm.io/last-change',
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

/** What the last run made of its status, kept on the VM so a no-op compares locally and asks the API nothing. */
export interface Published {
  target: string;
  view: FleetView;
  /** When it was last written (or refused); absent while the object is missing. */
  at?: string;
  /** The API refused the publish (403): tried again at the heartbeat, not on every run. */
  refused?: string;
}

/** A label value Kubernetes accepts: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends. */
export function labelValue(text: string): string {
  return text
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(0, 63)
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
}

/**
 * The view of a run's status. A run that changed nothing and converged again keeps what the last change said (how many
 * resources it changed, the drift it found, when): a steady fleet's view does not move, a change stays visible until the next.
 */
export function fleetView(status: RunStatus, previous?: FleetView): FleetView {
  const ok = status.outcome === 'changed' || status.outcome === 'unchanged';
  const outcome = ok ? 'converged' : status.outcome;
  const kept = status.outcome === 'unchanged' && previous?.labels[LABELS.outcome] === 'converged' ? previous : undefined;
  const r = status.resources;
  const drift = status.drift.join(', ');
  const change: Record<string, string> = kept
    ? Object.fromEntries(
        [ANNOTATIONS.lastChange, ANNOTATIONS.resources, ANNOTATIONS.driftFound].flatMap((k) => (k in kept.annotations ? [[k, kept.annotations[k]!]] : [])),
      )
    : {
        [ANNOTATIONS.resources]: `${r.total} total, ${r.changed} changed, ${r.failed} failed, ${r.skipped} skipped`,
        ...(r.changed > 0 && { [ANNOTATIONS.lastChange]: status.finishedAt.toISOString() }),
        ...(drift && { [ANNOTATIONS.driftFound]: drift.length > 1000 ? `${drift.slice(0, 997)}...` : drift }),
      };
  const changed = kept ? kept.labels[LABELS.changed]! : String(r.changed);
  const drifted = kept ? kept.labels[LABELS.drift]! : String(status.drift.length);
  const certificates = status.expiries.filter((e) => e.what === 'certificate').map((e) => e.at.getTime());
  const annotations: Record<string, string> = {
    [ANNOTATIONS.runlist]: status.runlist,
    ...change,
    // while failing: when it last converged
    ...(!ok && status.lastSuccessAt && { [ANNOTATIONS.lastSuccess]: status.lastSuccessAt.toISOString() }),
    ...(certificates.length && { [ANNOTATIONS.certificateExpiry]: new Date(Math.min(...certificates)).toISOString() }),
  };
  const last = change[ANNOTATIONS.lastChange];
  const message = ok
    ? `meshvm ${status.meshvm} converged runlist ${status.runlist}; ${last ? `the last change, at ${last}: ${change[ANNOTATIONS.resources]}, ${drifted} of them drift` : 'nothing changed'}`
    : `meshvm ${status.meshvm} runlist ${status.runlist} ${status.outcome}: ${r.failed} of ${r.total} resources failed, ${r.skipped} skipped; the VM's report: /var/lib/meshvm/last-run.json`;
  return {
    labels: { [LABELS.version]: labelValue(status.meshvm), [LABELS.outcome]: outcome, [LABELS.changed]: changed, [LABELS.drift]: drifted },
    annotations,
    condition: {
      type: CONDITION_TYPE,
      status: ok ? 'True' : 'False',
      reason: ok ? 'Converged' : status.outcome === 'failed' ? 'Failed' : 'Interrupted',
      message,
    },
  };
}

export const targetKey = (t: FleetTarget): string => `${t.api.kind} ${t.namespace}/${t.name}`;

/** True when the last publish said the same thing to the same object (or was refused) and the heartbeat is not due. */
export function upToDate(previous: Published | undefined, target: FleetTarget, view: FleetView, now: Date): boolean {
  if (!previous?.at || previous.target !== targetKey(target)) return false;
  if (!previous.refused && !isDeepStrictEqual(previous.view, view)) return false;
  const age = (now.getTime() - Date.parse(previous.at)) / 1000;
  return age >= 0 && age < HEARTBEAT_SECONDS;
}

/**
 * Writes the view. A Lease: one server-side apply by name (creates it, or sets exactly the fields the view has; RBAC can
 * restrict create to the VM's Lease). A WorkloadEntry, where it differs from what the entry carries: the condition
 * through the status subresource (a read-modify-write with the resourceVersion read: Istio's status.conditions is a plain
 * list, so a merge patch would replace istiod's Healthy condition), labels and annotations as a merge patch (never creates
 * the entry). Both by field manager meshvm-fleet-view. Returns the number of writes, or 'missing' when the WorkloadEntry
 * does not exist (istiod has not registered the VM yet).
 */
export async function publishView(k: KubernetesClient, target: FleetTarget, view: FleetView, now: Date): Promise<number | 'missing'> {
  if (target.api === LEASES) {
    await applyLease(k, target, view, now);
    return 1;
  }
  const where = targetKey(target);
  for (let round = 0; ; round++) {
    const object = await readObject(k, target.api, target.namespace, target.name);
    if (!object) return 'missing';
    let writes = 0;
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
    if (staleMetadata(object, view) || writes > 0 || heartbeatDue(object, now)) {
      // null removes an annotation of ours the view no longer carries (no drift found any more)
      const gone = Object.fromEntries(Object.values(ANNOTATIONS).map((key) => [key, null]));
      const annotations = { ...gone, ...view.annotations, [ANNOTATIONS.lastRun]: now.toISOString() };
      await mergePatch(k, target, { metadata: { labels: view.labels, annotations } });
      writes++;
    }
    return writes;
  }
}

/** Labels or annotations the object lacks or carries with another value, or an annotation of ours the view has no more. */
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

/** metav1.MicroTime: RFC 3339 with microseconds. */
const microTime = (d: Date): string => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

/** The Lease as kube-node-lease heartbeats use one (who renews it, when it last did, for how long it holds), with the view. */
async function applyLease(k: KubernetesClient, target: FleetTarget, view: FleetView, now: Date): Promise<void> {
  const body = {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: target.name,
      namespace: target.namespace,
      labels: { ...view.labels, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE },
      annotations: { ...view.annotations, [ANNOTATIONS.lastRun]: now.toISOString() },
    },
    spec: { holderIdentity: 'meshvm', leaseDurationSeconds: LEASE_SECONDS, renewTime: microTime(now) },
  };
  const { PatchStrategy, setHeaderOptions } = await import('@kubernetes/client-node');
  await k.call(`applying ${targetKey(target)} (server-side apply, field manager ${FLEET_VIEW_MANAGER})`, () =>
    k.custom.patchNamespacedCustomObject(
      { ...apiParams(target), body, fieldManager: FLEET_VIEW_MANAGER, force: true },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
    ),
  );
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
 * is not due: then it asks the API nothing. A refusal (403) is kept and tried again at the heartbeat. Says what it did.
 */
export async function publishFleetView(host: Host, target: FleetTarget, status: RunStatus, connect: () => Promise<KubernetesClient>): Promise<string> {
  const previous = await readPublished(host);
  const view = fleetView(status, previous?.view);
  const now = status.finishedAt;
  const where = targetKey(target);
  const save = (record: Omit<Published, 'target' | 'view'>) => savePublished(host, { target: where, view, ...record });
  if (upToDate(previous, target, view, now)) {
    return previous?.refused
      ? `${where}: the fleet view is not published (refused at ${previous.at}; tried again ${HEARTBEAT_SECONDS / 60} minutes after)`
      : `${where}: the fleet view is as published at ${previous?.at}`;
  }
  let writes: number | 'missing';
  try {
    writes = await publishView(await connect(), target, view, now);
  } catch (error) {
    if (error instanceof KubernetesError && error.status === 403) await save({ at: now.toISOString(), refused: error.message });
    throw error;
  }
  if (writes === 'missing') {
    await save({});
    return `${where} does not exist (yet): the fleet view is published once istiod has registered the VM`;
  }
  await save({ at: now.toISOString() });
  return `${where}: fleet view ${writes ? `published (${writes} write${writes > 1 ? 's' : ''})` : 'already there'}`;
}

async function readPublished(host: Host): Promise<Published | undefined> {
  try {
    const data = JSON.parse((await host.readFile(FLEET_VIEW_FILE)) ?? 'null') as Published | null;
    return data && typeof data.target === 'string' && data.view?.labels && data.view.annotations && data.view.condition ? data : undefined;
  } catch {
    return undefined; // damaged: publish again
  }
}

async function savePublished(host: Host, published: Published): Promise<void> {
  await ensureStateDir(host);
  await host.writeFile(FLEET_VIEW_FILE, `${JSON.stringify(published, null, 2)}\n`, { mode: 0o644, backup: false });
}
