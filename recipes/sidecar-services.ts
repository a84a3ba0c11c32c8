// Recipe sidecar-services: istio (and the classic node agent) enabled and running, restarted once when an input changed,
// and never waited for while its start is queued behind the boot converge.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import type { Applied, Changes } from '../engine/resource.ts';
import { defineResource } from '../engine/resource.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { serviceType, type ServiceSpec, type ServiceState } from '../resources/service.ts';
import { BOOT_UNIT } from './converge-timer.ts';
import { flow, sidecarServiceSpecs } from './mesh.ts';
import { servicesChecks } from './checks/services.ts';
import { Service } from '../resources/service.ts';
import { joinedByMeshvm } from './undo.ts';

/** A unit's jobs as `systemctl list-jobs --no-legend --plain UNIT` prints them: "75 istio.service start waiting" (pure). */
export function parseListJobs(text: string): { id: number; unit: string; type: string; state: string }[] {
  return text
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length >= 4 && /^\d+$/.test(f[0]!))
    .map(([id, unit, type, state]) => ({ id: Number(id), unit: unit!, type: type!, state: state! }));
}

/** Whether systemd has a start of the unit queued (at boot: waiting for the boot converge it is ordered after). */
async function startQueued(host: HostReader, unit: string): Promise<boolean> {
  const jobs = parseListJobs((await host.query(['systemctl', 'list-jobs', '--no-legend', '--plain', unit])).stdout);
  return jobs.some((job) => job.unit === unit && ['start', 'restart', 'reload-or-start', 'try-restart'].includes(job.type));
}

/** Whether the boot converge (meshvm-boot.service, ordered before the sidecar) is running now: a job on istio would wait for it. */
async function bootConvergeRunning(host: HostReader): Promise<boolean> {
  const state = (await host.query(['systemctl', 'show', '-p', 'ActiveState', '--value', BOOT_UNIT])).stdout.trim();
  return state === 'activating';
}

/**
 * A sidecar unit: a Service (same kind, same ref, so the other recipes' notifications reach it), except while the boot
 * converge runs. istio is ordered after meshvm-boot.service, so a `systemctl start istio` or `restart istio` made by the
 * boot converge would wait for the boot converge to end: the boot would hang until its timeout. Then a start is queued
 * without waiting (`--no-block`: it runs once the converge is done, with everything the converge wrote), and a restart owed
 * to a unit whose start is still queued is not needed (that start reads the new inputs).
 */
export const SidecarService = defineResource({
  ...serviceType,
  async apply(host: Host, spec: ServiceSpec, changes: Changes<ServiceState>): Promise<void> {
    if (changes.running?.to !== true || !host.live || !(await bootConvergeRunning(host))) return serviceType.apply(host, spec, changes);
    const { running: _, ...rest } = changes;
    await serviceType.apply(host, spec, rest);
    await host.run(['systemctl', 'start', '--no-block', spec.name]);
  },
  async refresh(host: Host, spec: ServiceSpec, applied: Applied<ServiceState> | undefined): Promise<void | 'not-needed'> {
    if (!host.live || spec.running === false || spec.masked || applied?.changes.running?.to === true) return serviceType.refresh(host, spec, applied);
    if (await startQueued(host, spec.name)) return 'not-needed';
    if (!(await bootConvergeRunning(host))) return serviceType.refresh(host, spec, applied);
    await host.run(['systemctl', spec.refresh === 'restart' ? 'restart' : spec.refresh, '--no-block', spec.name]);
  },
});

export const sidecarServices = defineRecipe({
  name: 'sidecar-services',
  description:
    'The sidecar units enabled and running; the other recipes notify them when cluster.env, sidecar.env, the mesh config, the root certificate or the package change.',
  attributes: z.strictObject({ flow }),
  checks: servicesChecks,
  declare: (a) => sidecarServiceSpecs(a.flow).map((spec) => SidecarService(spec)),
  /** Stopped (its ExecStopPost removes the sidecar's nat rules) and disabled, on a machine meshvm converged. */
  undo: async (a, ctx) =>
    (await joinedByMeshvm(ctx)) ? sidecarServiceSpecs(a.flow).map((spec) => Service({ name: spec.name, enabled: false, running: false })) : [],
});
