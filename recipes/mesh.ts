// What the mesh-expansion recipes share: the workload's identity, the flow, and the sidecar's services as notification targets.
import { z } from 'zod';
import type { RecipeContext } from '../engine/recipe.ts';
import type { Notifiable } from '../engine/resource.ts';
import { Service } from '../resources/service.ts';

/** A namespace name as Kubernetes accepts it (a DNS-1123 label). */
export const namespaceName = z
  .string()
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected a Kubernetes namespace name: lower case letters, digits and "-", at most 63');
/** A service account name as Kubernetes accepts it (a DNS-1123 subdomain). */
export const serviceAccountName = z
  .string()
  .max(253)
  .regex(
    /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
    'expected a Kubernetes service account name: lower case letters, digits, "-" and "."',
  );

export const flow = z.enum(['classic', 'istiod']).default('classic');

/** Who this VM is in the mesh (istioctl's WorkloadGroup): the workload's name, namespace and service account. */
export const workload = z.strictObject({
  /** The WorkloadGroup (and canonical service) name. */
  name: namespaceName,
  namespace: namespaceName,
  serviceAccount: serviceAccountName,
  /** Inbound ports the sidecar captures; none means all ("*"). */
  ports: z.array(z.number().int().min(1).max(65535)).default([]),
  network: z.string().default(''),
  labels: z.record(z.string(), z.string()).default({}),
  clusterId: z.string().default('Kubernetes'),
  meshId: z.string().default(''),
  trustDomain: z.string().default('cluster.local'),
  /** An istiod revision ("canary"); default none. */
  revision: z
    .string()
    .regex(/^[a-z0-9-]*$/)
    .default(''),
});
export type Workload = z.output<typeof workload>;

export const proxyUser = z.string().default('istio-proxy');

/** istiod[-rev].<ns>.svc, the name the sidecar dials (istioctl's IstiodHost). */
export function istiodHost(systemNamespace: string, revision: string): string {
  return `${revision && revision !== 'default' ? `istiod-${revision}` : 'istiod'}.${systemNamespace}.svc`;
}

/** dnsmasq as the dns recipe declares it: other recipes notify it when an input dnsmasq reads (e.g. /etc/hosts) changes. */
export const DNSMASQ_SERVICE = { name: 'dnsmasq', enabled: true, running: true } as const;

/** The sidecar's units: istio, and in the classic flow the node agent too. */
export function sidecarServiceSpecs(flowName: 'classic' | 'istiod') {
  return (flowName === 'classic' ? ['istio', 'istio-auth-node-agent'] : ['istio']).map((name) => ({ name, enabled: true, running: true }));
}

/**
 * The sidecar services, as targets for a changed input to notify: only when the runlist runs the sidecar-services recipe,
 * which declares them (last, so they start after their inputs exist).
 */
export function sidecarRestart(ctx: RecipeContext, flowName: 'classic' | 'istiod'): { notifies?: Notifiable[] } {
  if (!ctx.runlist.recipes.includes('sidecar-services')) return {};
  return { notifies: sidecarServiceSpecs(flowName).map((spec) => Service(spec)) };
}
