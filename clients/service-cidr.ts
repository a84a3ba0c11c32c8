// The cluster's service range(s): the ServiceCIDR API (v1.33+), else a dry-run probe whose refusal names the range, else the caller's value.
import type { KubernetesClient } from './kubernetes.ts';
import { KubernetesError, rangeFromProbe } from './kubernetes-errors.ts';

export interface ServiceCidrs {
  /** Every range, de-duplicated, in the order found (dual-stack clusters give one per family). */
  cidrs: string[];
  source: 'servicecidr-api' | 'dry-run-probe' | 'attribute';
  /** Why the earlier sources were passed over, for the run's log. */
  notes: string[];
}

/** An address outside any plausible service range; the dry-run refusal names the valid one. */
const PROBE_IP = '1.1.1.1';

export async function findServiceCidrs(k: KubernetesClient, o: { probeNamespace?: string; fallback?: readonly string[] }): Promise<ServiceCidrs> {
  const notes: string[] = [];
  try {
    const list = await k.call('listing ServiceCIDRs (networking.k8s.io/v1)', () => k.networking.listServiceCIDR());
    const cidrs = [...new Set(list.items.flatMap((item) => item.spec?.cidrs ?? []))];
    if (cidrs.length > 0) return { cidrs, source: 'servicecidr-api', notes };
    notes.push('the ServiceCIDR list is empty');
  } catch (error) {
    if (!(error instanceof KubernetesError) || (error.status !== 404 && error.status !== 403)) throw error;
    notes.push(error.status === 404 ? 'the ServiceCIDR API is not served (a cluster older than v1.33)' : error.message);
  }

  const namespace = o.probeNamespace ?? 'default';
  try {
    await k.call(`dry-run probe: a Service with clusterIP ${PROBE_IP} in namespace ${namespace}`, () =>
      k.core.createNamespacedService({
        namespace,
        dryRun: 'All',
        body: { apiVersion: 'v1', kind: 'Service', metadata: { name: 'meshvm-service-cidr-probe' }, spec: { clusterIP: PROBE_IP, ports: [{ port: 443 }] } },
      }),
    );
    notes.push(`the dry-run probe was accepted (${PROBE_IP} lies inside the service range?), so it named no range`);
  } catch (error) {
    if (!(error instanceof KubernetesError) || (error.status !== 422 && error.status !== 403)) throw error;
    const range = error.status === 422 ? rangeFromProbe(error.message) : undefined;
    if (range) return { cidrs: [range], source: 'dry-run-probe', notes };
    notes.push(error.status === 403 ? error.message : `the dry-run probe's refusal named no range (${error.message})`);
  }

  if (o.fallback && o.fallback.length > 0) return { cidrs: [...o.fallback], source: 'attribute', notes };
  throw new Error(`cannot learn the cluster's service CIDR: ${notes.join('; ')}; grant one of these permissions or set the service CIDR in the runlist`);
}
