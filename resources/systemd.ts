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
    enabled: ['enabled', 'enabled-runtime', 'alias', 'static', 'indirect', 'generated'].includes(fileState) ? fileState.startsWith('enabled') || fileState === 'alias' : false,
    running: ['active', 'activating', 'reloading'].includes(props.ActiveState ?? ''),
    needsDaemonReload: props.NeedDaemonReload === 'yes',
  };
}

/** True when systemd runs this root's services: the root is / and systemd is PID 1 (sd_booted's test). */
export async function systemdLive(host: HostReader): Promise<boolean> {
  if (host.root !== '/') return false;
  return host.memo('systemd-live', async () => (await host.stat('/run/systemd/system'))?.type === 'directory');
}

/** systemctl, offline (`--root`) when the root is not the running system's. */
export function systemctl(host: HostReader, ...args: string[]): string[] {
  return host.root === '/' ? ['systemctl', ...args] : ['systemctl', `--root=${host.root}`, ...args];
}
