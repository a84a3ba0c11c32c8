// What systemd resources share: unit names, the live-or-offline question, and the parser of `systemctl show`.
import { z } from 'zod';
import type { HostReader } from '../engine/host.ts';

const UNIT_TYPES = ['service', 'socket', 'timer', 'path', 'mount', 'automount', 'target', 'slice', 'scope', 'swap', 'device'];

/** A unit name as systemd accepts it: no slash, allowed characters, a known type suffix (".service" added when none). */
export const unitName = z
  .string()
  .min(1)
  .max(255)
  .refine((v) => !v.includes('/'), 'a unit name must not contain "/" (give the name, e.g. istio.service, not a path)')
  .refine((v) => /^[A-Za-z0-9:_.\\@-]+$/.test(v), 'a unit name may only contain letters, digits and ":_.\\@-"')
  .transform((v) => (UNIT_TYPES.some((t) => v.endsWith(`.${t}`)) ? v : `${v}.service`));

/** `systemctl show -p A -p B UNIT` output as a map. */
export function parseSystemctlShow(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

export interface UnitStatus {
  loaded: boolean;
  masked: boolean;
  enabled: boolean;
  running: boolean;
  needsDaemonReload: boolean;
}

/** Reads a unit's state out of `systemctl show` properties. */
export function unitStatus(props: Record<string, string>): UnitStatus {
  const fileState = props.UnitFileState ?? '';
  return {
    loaded: props.LoadState === 'loaded',
    masked: props.LoadState === 'masked' || fileState.startsWith('masked'),
    // a static or generated unit has no [Install] section: it cannot be enabled, and asking for enabled is already true
    enabled: ['enabled', 'enabled-runtime', 'alias', 'static', 'indirect', 'generated'].includes(fileState),
    running: ['active', 'activating', 'reloading'].includes(props.ActiveState ?? ''),
    needsDaemonReload: props.NeedDaemonReload === 'yes',
  };
}

/** Where vendor unit files live: a unit file in /etc/systemd/system takes their place. */
const VENDOR_UNIT_DIRS = ['/usr/local/lib/systemd/system/', '/usr/lib/systemd/system/', '/lib/systemd/system/'];

/**
 * Files in /etc/systemd/system that systemd has not loaded for a unit (pure), from `systemctl show -p FragmentPath
 * -p DropInPaths` and what is on disk. systemd's NeedDaemonReload compares only the files it loaded, so it says "no"
 * for a drop-in in a <unit>.d directory created since the last daemon-reload, and for a unit file that now takes the
 * vendor one's place: those need a daemon-reload too.
 */
export function unloadedUnitFiles(name: string, props: Record<string, string>, etc: { unitFile: boolean; dropIns: readonly string[] }): string[] {
  const loaded = new Set((props.DropInPaths ?? '').split(/\s+/).filter(Boolean));
  const fragment = props.FragmentPath ?? '';
  const out: string[] = [];
  if (etc.unitFile && (fragment === '' || VENDOR_UNIT_DIRS.some((dir) => fragment.startsWith(dir)))) out.push(`/etc/systemd/system/${name}`);
  for (const file of etc.dropIns) {
    const dropIn = `/etc/systemd/system/${name}.d/${file}`;
    if (file.endsWith('.conf') && !loaded.has(dropIn)) out.push(dropIn);
  }
  return out;
}

/** True when systemd runs this root's services: the root is / and systemd is PID 1 (sd_booted's test). */
export async function systemdLive(host: HostReader): Promise<boolean> {
  if (!host.live) return false;
  return host.memo('systemd-live', async () => (await host.stat('/run/systemd/system'))?.type === 'directory');
}

/** systemctl, offline (`--root`) when the root is not the running system's. */
export function systemctl(host: HostReader, ...args: string[]): string[] {
  return host.live ? ['systemctl', ...args] : ['systemctl', `--root=${host.root}`, ...args];
}
