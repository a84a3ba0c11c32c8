// The registration recipe's check: this VM's WorkloadEntry exists and, with health checks on, is Healthy (status.conditions),
// read through the connection its declarations carry. auto: the entry istiod made when the sidecar connected; manual: meshvm's.
import type { Check, CheckContext } from '../../engine/check.ts';
import type { HostReader } from '../../engine/host.ts';
import type { WorkloadEntrySpec } from '../../resources/workload-entry.ts';
import type { WorkloadGroupSpec } from '../../resources/workload-group.ts';
import { sidecarEnvironment } from './istiod.ts';

/** The annotation istiod (auto, with a probe) and meshvm (manual, with a probe) put on an entry whose health is reported. */
const HEALTH_CHECKS = 'proxy.istio.io/health-checks-enabled';

interface Condition {
  type?: string;
  status?: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}

/** The entry istiod auto-registers for a proxy: <group>-<address>[-<network>], ":" as "-", at most 253 (its own naming). */
export function autoEntryName(group: string, address: string, network: string | undefined): string {
  const name = [group, address.replaceAll(':', '-'), ...(network ? [network] : [])].join('-');
  return name.length > 253 ? name.slice(name.length - 253) : name;
}

/** The sidecar's address as istio-start.sh takes it: ISTIO_SVC_IP, else the first of `hostname --all-ip-addresses`. */
export async function sidecarAddress(host: HostReader): Promise<string | undefined> {
  const env = await sidecarEnvironment(host);
  if (env.ISTIO_SVC_IP) return env.ISTIO_SVC_IP;
  if (!host.live) return undefined;
  const result = await host.query(['hostname', '--all-ip-addresses']);
  return result.exitCode === 0 ? result.stdout.trim().split(/\s+/)[0] || undefined : undefined;
}

/** Wire with `checks: registrationChecks` in the registration recipe: it reads only what that recipe declared. */
export async function registrationChecks(_a: object, context: CheckContext): Promise<Check[]> {
  const checks: Check[] = [];
  for (const d of context.declared) {
    if (d.type.kind === 'workload_entry') {
      const spec = d.spec as WorkloadEntrySpec;
      if (spec.ensure === 'absent') continue;
      checks.push(await entryCheck(spec.connect, spec.namespace, spec.name, { auto: false, healthChecks: spec.healthChecks }));
    } else if (d.type.kind === 'workload_group') {
      const spec = d.spec as WorkloadGroupSpec;
      if (spec.ensure === 'absent') continue;
      const address = await sidecarAddress(context.host);
      if (!address) {
        checks.push({
          check: 'registration',
          ok: true,
          skipped: true,
          detail: context.host.live
            ? `the WorkloadEntry istiod registers for WorkloadGroup ${spec.namespace}/${spec.name} is named after the sidecar's address, which is unknown (no ISTIO_SVC_IP in cluster.env and \`hostname --all-ip-addresses\` lists none): set ISTIO_SVC_IP`
            : `the WorkloadEntry istiod registers for WorkloadGroup ${spec.namespace}/${spec.name} is named after the running machine's address: not checked under --root ${context.host.root}`,
        });
        continue;
      }
      const name = autoEntryName(spec.name, address, spec.network);
      checks.push(await entryCheck(spec.connect, spec.namespace, name, { auto: true, healthChecks: spec.probe !== undefined, group: spec.name }));
    }
  }
  return checks;
}

async function entryCheck(
  connect: WorkloadEntrySpec['connect'],
  namespace: string,
  name: string,
  o: { auto: boolean; healthChecks: boolean; group?: string },
): Promise<Check> {
  const where = `WorkloadEntry ${namespace}/${name}`;
  let entry: { metadata: { annotations?: Record<string, string> }; status?: unknown } | undefined;
  try {
    const { readObject, WORKLOAD_ENTRIES } = await import('../../clients/workload-group.ts');
    entry = await readObject(await connect(), WORKLOAD_ENTRIES, namespace, name);
  } catch (error) {
    const status = (error as { status?: number }).status;
    if (status === 401 || status === 403) {
      return {
        check: 'registration',
        ok: true,
        skipped: true,
        detail: `${where}: not checked, the cluster access meshvm has may not read it (${status}); to check it, allow get on workloadentries (apiGroup networking.istio.io) in namespace ${namespace}`,
      };
    }
    return {
      check: 'registration',
      ok: false,
      detail: `${where} cannot be read: ${(error as Error).message}`,
      fix: 'is the API server reachable from this VM?',
    };
  }
  if (!entry) {
    return {
      check: 'registration',
      ok: false,
      detail: `${where} does not exist`,
      fix: o.auto
        ? `istiod creates it (from WorkloadGroup ${namespace}/${o.group}) when the sidecar connects, named after the sidecar's address (ISTIO_SVC_IP, else the first of hostname --all-ip-addresses): is the sidecar connected (the control plane and sidecar lines)? kubectl -n ${namespace} get workloadentries`
        : 'meshvm converge creates it (the registration recipe, mode manual)',
    };
  }
  const conditions = ((entry.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).filter((c) => c.type === 'Healthy');
  const healthy = conditions.at(-1);
  const checked = o.healthChecks || entry.metadata.annotations?.[HEALTH_CHECKS] === 'true';
  if (healthy?.status === 'True') return { check: 'registration', ok: true, detail: `${where} exists and is Healthy` };
  if (healthy) {
    const why = [healthy.reason, healthy.message].filter(Boolean).join(': ');
    return {
      check: 'registration',
      ok: false,
      detail: `${where} is not Healthy (Healthy=${healthy.status}${why ? `, ${why}` : ''}${healthy.lastTransitionTime ? ` since ${healthy.lastTransitionTime}` : ''})`,
      fix: "istiod sends it no traffic until the agent's readiness probe passes: the sidecar line (localhost:15021/healthz/ready) and the workload's own port",
    };
  }
  if (checked) {
    return {
      check: 'registration',
      ok: false,
      detail: `${where} exists, with health checks on, but has no Healthy condition: istiod has had no health report from the agent`,
      fix: "is the sidecar connected (the control plane line), and does its mesh config carry the readiness probe (the WorkloadGroup's probe)?",
    };
  }
  return { check: 'registration', ok: true, detail: `${where} exists (health checks are off: no probe, so no Healthy condition to wait for)` };
}
