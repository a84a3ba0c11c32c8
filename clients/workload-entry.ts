// WorkloadEntry registration (networking.istio.io/v1): create if absent, replace only when the spec or labels differ.
import { isDeepStrictEqual } from 'node:util';
import type { KubernetesClient } from './kubernetes.ts';
import { KubernetesError } from './kubernetes-errors.ts';

export interface WorkloadEntryInput {
  namespace: string;
  name: string;
  /** The WorkloadEntry spec: address, labels, serviceAccount, network, ports, locality, weight. */
  spec: Record<string, unknown>;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const API = { group: 'networking.istio.io', version: 'v1', plural: 'workloadentries' } as const;

interface Stored {
  metadata?: { resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: unknown;
}

export async function upsertWorkloadEntry(k: KubernetesClient, e: WorkloadEntryInput): Promise<'created' | 'updated' | 'unchanged'> {
  const where = `WorkloadEntry ${e.namespace}/${e.name}`;
  const body = (resourceVersion?: string): Record<string, unknown> => ({
    apiVersion: `${API.group}/${API.version}`,
    kind: 'WorkloadEntry',
    metadata: {
      name: e.name,
      namespace: e.namespace,
      ...(e.labels ? { labels: e.labels } : {}),
      ...(e.annotations ? { annotations: e.annotations } : {}),
      ...(resourceVersion ? { resourceVersion } : {}),
    },
    spec: e.spec,
  });
  // Two rounds at most: a create that races another writer, or a replace that meets a newer version, reads again once.
  for (let round = 0; round < 2; round++) {
    const current = await get(k, e, where);
    if (!current) {
      try {
        await k.call(`creating ${where}`, () => k.custom.createNamespacedCustomObject({ ...API, namespace: e.namespace, body: body() }));
        return 'created';
      } catch (error) {
        if (error instanceof KubernetesError && error.status === 409) continue;
        throw error;
      }
    }
    if (isDeepStrictEqual(current.spec, e.spec) && sameMap(current.metadata?.labels, e.labels) && sameMap(current.metadata?.annotations, e.annotations))
      return 'unchanged';
    try {
      await k.call(`replacing ${where}`, () =>
        k.custom.replaceNamespacedCustomObject({ ...API, namespace: e.namespace, name: e.name, body: body(current.metadata?.resourceVersion) }),
      );
      return 'updated';
    } catch (error) {
      if (error instanceof KubernetesError && error.status === 409) continue;
      throw error;
    }
  }
  throw new Error(`${where}: another writer kept changing it; re-run`);
}

async function get(k: KubernetesClient, e: WorkloadEntryInput, where: string): Promise<Stored | undefined> {
  try {
    return (await k.call(`reading ${where}`, () => k.custom.getNamespacedCustomObject({ ...API, namespace: e.namespace, name: e.name }))) as Stored;
  } catch (error) {
    if (error instanceof KubernetesError && error.status === 404) return undefined;
    throw error;
  }
}

/** The keys we set have our values (other keys, added by controllers, are left alone). */
function sameMap(have: Record<string, string> | undefined, want: Record<string, string> | undefined): boolean {
  return Object.entries(want ?? {}).every(([key, value]) => have?.[key] === value);
}
