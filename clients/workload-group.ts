// The objects that register a VM in the mesh (WorkloadGroup, WorkloadEntry, a selector Service): read, server-side applied as field manager meshvm, deleted.
import type { KubernetesClient } from './kubernetes.ts';
import { KubernetesError } from './kubernetes-errors.ts';

/** The field manager of every server-side apply meshvm makes (it owns what it sends; other managers' fields stay theirs). */
export const FIELD_MANAGER = 'meshvm';
/** The label that marks an object meshvm made; only such objects are ever deleted by meshvm. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'meshvm';

/** Where a kind lives in the API: the group ('' for core), version, plural, kind. */
export interface ObjectApi {
  group: string;
  version: string;
  plural: string;
  kind: string;
}

export const WORKLOAD_GROUPS: ObjectApi = { group: 'networking.istio.io', version: 'v1', plural: 'workloadgroups', kind: 'WorkloadGroup' };
export const WORKLOAD_ENTRIES: ObjectApi = { group: 'networking.istio.io', version: 'v1', plural: 'workloadentries', kind: 'WorkloadEntry' };
export const SERVICES: ObjectApi = { group: '', version: 'v1', plural: 'services', kind: 'Service' };
/** The Lease the fleet view keeps for a VM no WorkloadEntry stands for (clients/fleet-view.ts). */
export const LEASES: ObjectApi = { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease' };

export interface ManagedFieldsEntry {
  manager?: string;
  operation?: string;
  fieldsType?: string;
  fieldsV1?: Record<string, unknown>;
}

/** A namespaced object as the API serves it (plain JSON). */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    uid?: string;
    resourceVersion?: string;
    managedFields?: ManagedFieldsEntry[];
    [key: string]: unknown;
  };
  spec?: Record<string, unknown>;
  status?: unknown;
  [key: string]: unknown;
}

const apiVersionOf = (api: ObjectApi): string => (api.group === '' ? api.version : `${api.group}/${api.version}`);
const where = (api: ObjectApi, namespace: string, name: string): string => `${api.kind} ${namespace}/${name}`;
/** Typed client models (class instances, Dates) as the plain JSON the API sent. */
const plain = (value: unknown): KubeObject => JSON.parse(JSON.stringify(value)) as KubeObject;

/** The object, or undefined when the API says 404. */
export async function readObject(k: KubernetesClient, api: ObjectApi, namespace: string, name: string): Promise<KubeObject | undefined> {
  try {
    const found = await k.call(`reading ${where(api, namespace, name)}`, () =>
      api.group === ''
        ? k.core.readNamespacedService({ name, namespace })
        : k.custom.getNamespacedCustomObject({ group: api.group, version: api.version, plural: api.plural, namespace, name }),
    );
    return plain(found);
  } catch (error) {
    if (error instanceof KubernetesError && error.status === 404) return undefined;
    throw error;
  }
}

/**
 * Server-side apply (PATCH, application/apply-patch+yaml, fieldManager meshvm, force): creates the object or sets the
 * fields meshvm sends; fields other managers own (other labels, status) are left as they are; fields meshvm set before
 * and no longer sends are removed. Forced, so a field another manager took over (a `kubectl edit`) comes back to what
 * meshvm declares, as a converge should. RBAC: `patch`, and `create` when the object does not exist yet.
 */
export async function applyObject(k: KubernetesClient, api: ObjectApi, object: KubeObject, opts: { dryRun?: boolean } = {}): Promise<KubeObject> {
  const namespace = object.metadata.namespace ?? '';
  const name = object.metadata.name;
  const body = { ...object, apiVersion: apiVersionOf(api), kind: api.kind };
  // loaded here, not at the top: a recipe that only declares registration must not load the Kubernetes client at start-up
  const { PatchStrategy, setHeaderOptions } = await import('@kubernetes/client-node');
  const options = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);
  // a dry run (preflight) is authorized, admitted and validated as the apply would be, and stores nothing
  const params = { name, namespace, body, fieldManager: FIELD_MANAGER, force: true, ...(opts.dryRun && { dryRun: 'All' }) };
  const what = `${opts.dryRun ? 'a dry run of ' : ''}applying ${where(api, namespace, name)} (server-side apply, field manager ${FIELD_MANAGER})`;
  const applied = await k.call(what, () =>
    api.group === ''
      ? k.core.patchNamespacedService(params, options)
      : k.custom.patchNamespacedCustomObject({ ...params, group: api.group, version: api.version, plural: api.plural }, options),
  );
  return plain(applied);
}

/** Deletes the object with the uid that was read (a newer object of the same name is not deleted); false when it was already gone. */
export async function deleteObject(k: KubernetesClient, api: ObjectApi, namespace: string, name: string, uid?: string): Promise<boolean> {
  const body = uid ? { preconditions: { uid } } : {};
  try {
    await k.call(`deleting ${where(api, namespace, name)}`, () =>
      api.group === ''
        ? k.core.deleteNamespacedService({ name, namespace, body })
        : k.custom.deleteNamespacedCustomObject({ group: api.group, version: api.version, plural: api.plural, namespace, name, body }),
    );
    return true;
  } catch (error) {
    if (error instanceof KubernetesError && error.status === 404) return false;
    throw error;
  }
}

/** True when the object carries meshvm's managed-by label. */
export function managedByMeshvm(object: Pick<KubeObject, 'metadata'> | undefined): boolean {
  return object?.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY_VALUE;
}
