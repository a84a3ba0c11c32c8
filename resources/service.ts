// Service: a systemd unit enabled, running or masked; refresh restarts it (or reloads it when the spec says so).
import { z } from 'zod';
import { defineResource, type Applied, type Changes } from '../engine/resource.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { SERVICES_DIR } from '../engine/state-paths.ts';
import { parseSystemctlShow, systemctl, systemdLive, unitName, unitStatus, unloadedUnitFiles } from './systemd.ts';

export const serviceSpec = z.strictObject({
  name: unitName,
  enabled: z.boolean().optional(),
  running: z.boolean().optional(),
  masked: z.boolean().optional(),
  /** What a notification does; try-restart restarts it only if it runs. */
  refresh: z.enum(['restart', 'reload', 'reload-or-restart', 'try-restart']).default('restart'),
  /**
   * Keep a record of what meshvm turned on (enabled, started) under /var/lib/meshvm/services, so that offboarding turns
   * off only that; turning it off again forgets it.
   */
  track: z.boolean().default(false),
});
export type ServiceSpec = z.output<typeof serviceSpec>;

export interface ServiceState {
  enabled: boolean;
  /** Unknown in an offline root: nothing runs there. */
  running: boolean | undefined;
  masked: boolean;
}

const PROPS = ['LoadState', 'ActiveState', 'SubState', 'UnitFileState', 'NeedDaemonReload'];

export const serviceType = {
  kind: 'service',
  schema: serviceSpec.refine((s) => !(s.masked && (s.enabled || s.running)), 'a masked service cannot be enabled or running'),
  key: (spec: ServiceSpec) => spec.name,

  async current(host: HostReader, spec: ServiceSpec): Promise<ServiceState> {
    if (!host.live) {
      // offline root: only the enablement can be read (systemctl --root has no running manager); running is unknown
      const state = await host.query(systemctl(host, 'is-enabled', spec.name));
      const word = state.stdout.trim();
      return { enabled: word === 'enabled' || word === 'alias', masked: word.startsWith('masked'), running: undefined };
    }
    if (!(await systemdLive(host))) {
      throw new Error('systemd is not running on this host (no /run/systemd/system); services can only be managed on a booted system, or offline with --root');
    }
    const result = await host.query(['systemctl', 'show', ...PROPS.flatMap((p) => ['-p', p]), spec.name]);
    if (result.exitCode !== 0) throw new Error(`systemctl show ${spec.name} failed: ${result.stderr.trim()}`);
    const status = unitStatus(parseSystemctlShow(result.stdout));
    return { enabled: status.enabled, running: status.running, masked: status.masked };
  },

  changes(spec: ServiceSpec, current: ServiceState | undefined): Changes<ServiceState> {
    const changes: Changes<ServiceState> = {};
    for (const field of ['masked', 'enabled', 'running'] as const) {
      const want = spec[field];
      // what cannot be known (running, in an offline root) is not compared: it is decided when the machine boots
      if (field === 'running' && current && current.running === undefined) continue;
      if (want !== undefined && want !== current?.[field]) changes[field] = { from: current?.[field], to: want };
    }
    return changes;
  },

  async apply(host: Host, spec: ServiceSpec, changes: Changes<ServiceState>): Promise<void> {
    // a unit file written earlier in this run is picked up before the service is touched
    if (host.live && (await needsDaemonReload(host, spec.name))) await host.run(['systemctl', 'daemon-reload']);
    if (changes.masked) await host.run(systemctl(host, changes.masked.to ? 'mask' : 'unmask', spec.name));
    if (changes.enabled) await host.run(systemctl(host, changes.enabled.to ? 'enable' : 'disable', spec.name));
    if (changes.running && host.live) await host.run(['systemctl', changes.running.to ? 'start' : 'stop', spec.name]);
    if (spec.track) await recordTurnedOn(host, spec.name, changes);
  },

  /** A restart or reload; not needed for a service this run started (it read the changes that came before it). */
  async refresh(host: Host, spec: ServiceSpec, applied: Applied<ServiceState> | undefined): Promise<void | 'not-needed'> {
    if (applied?.changes.running?.to === true) return 'not-needed';
    if (!host.live) return; // nothing runs in an offline root
    if (await needsDaemonReload(host, spec.name)) await host.run(['systemctl', 'daemon-reload']);
    // a service declared stopped is not started by a notification, and a masked one cannot be (systemctl refuses)
    if (spec.running === false || spec.masked) return;
    await host.run(['systemctl', spec.refresh === 'restart' ? 'restart' : spec.refresh, spec.name]);
  },

  describe(field: string, change: { from: unknown; to: unknown }): string | undefined {
    const words: Record<string, [string, string]> = { enabled: ['enable', 'disable'], running: ['start', 'stop'], masked: ['mask', 'unmask'] };
    const pair = words[field];
    return pair && (change.to ? pair[0] : pair[1]);
  },
};

/** systemd says so, or a unit file or drop-in in /etc/systemd/system is one systemd has not loaded (see unloadedUnitFiles). */
async function needsDaemonReload(host: HostReader, name: string): Promise<boolean> {
  const result = await host.query(['systemctl', 'show', '-p', 'NeedDaemonReload', '-p', 'FragmentPath', '-p', 'DropInPaths', name]);
  const props = parseSystemctlShow(result.stdout);
  if (props.NeedDaemonReload === 'yes') return true;
  const unitFile = (await host.stat(`/etc/systemd/system/${name}`))?.type === 'file';
  const dropIns: string[] = [];
  for (const file of (await host.listDir(`/etc/systemd/system/${name}.d`)) ?? []) {
    // a drop-in linked to /dev/null is masked: systemd leaves it out of DropInPaths on purpose
    const dropIn = `/etc/systemd/system/${name}.d/${file}`;
    if ((await host.stat(dropIn))?.type !== 'symlink' || (await host.readLink(dropIn)) !== '/dev/null') dropIns.push(file);
  }
  return unloadedUnitFiles(name, props, { unitFile, dropIns }).length > 0;
}

/** What meshvm turned on: one file per unit under /var/lib/meshvm/services (dnsmasq.service), its lines "enabled" and "started". */
const turnedOnRecord = (name: string) => `${SERVICES_DIR}/${unitName.parse(name)}`;

/** What meshvm turned on for the unit (Service track: true), as its record says. */
export async function turnedOnByMeshvm(host: HostReader, name: string): Promise<{ enabled: boolean; started: boolean }> {
  const words = ((await host.readFile(turnedOnRecord(name))) ?? '').split('\n');
  return { enabled: words.includes('enabled'), started: words.includes('started') };
}

async function recordTurnedOn(host: Host, name: string, changes: Changes<ServiceState>): Promise<void> {
  const was = await turnedOnByMeshvm(host, name);
  const now = {
    enabled: changes.enabled ? changes.enabled.to && !changes.enabled.from : was.enabled,
    started: changes.running && host.live ? changes.running.to && !changes.running.from : was.started,
  };
  if (now.enabled === was.enabled && now.started === was.started) return;
  const text = [now.enabled && 'enabled', now.started && 'started'].filter(Boolean).join('\n');
  if (text) {
    if (!(await host.stat(SERVICES_DIR))) await host.mkdir(SERVICES_DIR, { mode: 0o755, parents: true });
    await host.writeFile(turnedOnRecord(name), `${text}\n`, { mode: 0o644, backup: false });
  } else if (await host.stat(turnedOnRecord(name))) await host.remove(turnedOnRecord(name));
}

export const Service = defineResource(serviceType);
