// Recipe converge-timer: meshvm's own units: a boot converge ordered before the sidecar, and a timer re-converging every
// half hour with a splay across the fleet.
import { z } from 'zod';
import { defineRecipe, type RecipeContext } from '../engine/recipe.ts';
import { File } from '../resources/file.ts';
import { Service } from '../resources/service.ts';
import { SystemdUnit, type systemdUnitSpec, unitPath, unitValueProblem } from '../resources/systemd-unit.ts';
import { showValue } from '../engine/values.ts';
import { ownFiles } from './undo.ts';
import { flow, sidecarServiceSpecs } from './mesh.ts';

const duration = z.string().regex(/^\d+(us|ms|s|min|h|d)?( \d+(us|ms|s|min|h|d)?)*$/, 'expected a systemd time span such as 30min or 1h 30min');

const TIMER_STAMP = '/var/lib/systemd/timers/stamp-meshvm.timer';

type SystemdUnitInput = z.input<typeof systemdUnitSpec>;

/** The boot converge: what lives on tmpfs (the istio-token) is back before the sidecar starts. */
export const BOOT_UNIT = 'meshvm-boot.service';

/** The .deb and .rpm (npm run package) ship the three units here, running the packaged executable. */
export const PACKAGE_UNIT_DIR = '/usr/lib/systemd/system';
export const PACKAGE_COMMAND = '/usr/bin/meshvm converge /etc/meshvm/runlist.yaml';
const LOCAL_COMMAND = '/usr/local/bin/meshvm converge /etc/meshvm/runlist.yaml';
const PACKAGE_TIMING = { onBootSec: '2min', every: '30min', splay: '5min', bootTimeout: '90s' } as const;

export const convergeTimer = defineRecipe({
  name: 'converge-timer',
  description:
    'meshvm-boot.service (a converge at boot, before the sidecar starts, bounded), meshvm.service (oneshot converge) and meshvm.timer (OnBootSec, OnUnitActiveSec, RandomizedDelaySec), enabled.',
  attributes: z.strictObject({
    flow,
    /**
     * The converge the timer runs (argv joined with spaces; systemd splits it). Default: the packaged executable
     * (/usr/bin/meshvm) where the package is installed, else /usr/local/bin/meshvm.
     */
    command: z
      .string()
      .min(1)
      .superRefine((text, ctx) => {
        const problem = unitValueProblem(text);
        if (problem) ctx.addIssue({ code: 'custom', message: `${showValue(text)} cannot be ExecStart=: ${problem}` });
      })
      .optional(),
    /**
     * auto: where the meshvm package's units are installed (/usr/lib/systemd/system) and command and timings are the
     * package's, only enable them; otherwise write the units to /etc/systemd/system (which override the package's).
     */
    units: z.enum(['auto', 'package', 'write']).default('auto'),
    onBootSec: duration.default(PACKAGE_TIMING.onBootSec),
    every: duration.default(PACKAGE_TIMING.every),
    /** Splay: each run is delayed by a random time up to this, so a fleet does not converge at once. */
    splay: duration.default(PACKAGE_TIMING.splay),
    /**
     * How long the boot converge may hold the sidecar's start: a control plane that does not answer must not hold the
     * boot; the sidecar then starts anyway, and the timer completes the converge later.
     */
    bootTimeout: duration.default(PACKAGE_TIMING.bootTimeout),
  }),
  declare: async (a, ctx) => {
    if (await packageUnits(a, ctx)) return [Service({ name: 'meshvm.timer', enabled: true, running: true }), Service({ name: BOOT_UNIT, enabled: true })];
    const command = a.command ?? ((await ctx.host.stat('/usr/bin/meshvm')) ? PACKAGE_COMMAND : LOCAL_COMMAND);
    const [service, timer, boot] = units({ ...a, command });
    return [
      SystemdUnit(service),
      SystemdUnit(timer),
      Service({ name: 'meshvm.timer', enabled: true, running: true }),
      SystemdUnit(boot),
      // enabled for the next boot, never started by a converge: it would wait for the run lock this converge holds
      Service({ name: BOOT_UNIT, enabled: true }),
    ];
  },
  /** The timer stopped and both disabled, then the unit files removed and systemd reloaded: those that carry meshvm's marker. */
  undo: async (a, ctx) => {
    if (await packageUnits(a, ctx))
      return [
        Service({ name: 'meshvm.timer', enabled: false, running: false }),
        Service({ name: BOOT_UNIT, enabled: false }),
        File({ path: TIMER_STAMP, ensure: 'absent' }),
      ];
    const written = units({ ...a, command: a.command ?? LOCAL_COMMAND });
    const own = await ownFiles(ctx, written.map(unitPath));
    const isOwn = (name: string) => own.includes(unitPath({ name }));
    return [
      isOwn('meshvm.timer') && Service({ name: 'meshvm.timer', enabled: false, running: false }),
      isOwn(BOOT_UNIT) && Service({ name: BOOT_UNIT, enabled: false }),
      ...written.filter((unit) => own.includes(unitPath(unit))).map((unit) => SystemdUnit({ ...unit, ensure: 'absent' })),
      // systemd's record of the timer's last run (Persistent=true), which outlives the timer
      isOwn('meshvm.timer') && File({ path: TIMER_STAMP, ensure: 'absent' }),
    ];
  },
});

/** Whether the meshvm package's units are the ones to use: asked for, or (auto) installed and the values are the package's. */
async function packageUnits(
  a: { units: 'auto' | 'package' | 'write'; command?: string | undefined } & Record<keyof typeof PACKAGE_TIMING, string>,
  ctx: RecipeContext,
) {
  if (a.units !== 'auto') return a.units === 'package';
  const asPackaged =
    (a.command ?? PACKAGE_COMMAND) === PACKAGE_COMMAND &&
    Object.entries(PACKAGE_TIMING).every(([key, value]) => a[key as keyof typeof PACKAGE_TIMING] === value);
  return asPackaged && (await ctx.host.stat(`${PACKAGE_UNIT_DIR}/meshvm.timer`)) !== undefined;
}

/** meshvm's three units, as declare writes them and undo removes them (and as the package ships them, with PACKAGE_COMMAND and the default timings). */
export function units(a: {
  command: string;
  onBootSec: string;
  every: string;
  splay: string;
  bootTimeout: string;
  flow: 'classic' | 'istiod';
}): [SystemdUnitInput, SystemdUnitInput, SystemdUnitInput] {
  return [
    {
      name: 'meshvm.service',
      sections: {
        Unit: {
          Description: 'meshvm converge (renews certificates and tokens, repairs drift)',
          Wants: 'network-online.target',
          After: 'network-online.target',
        },
        Service: { Type: 'oneshot', ExecStart: a.command, TimeoutStartSec: '15min' },
      },
    },
    {
      name: 'meshvm.timer',
      sections: {
        Unit: { Description: 'Re-converge meshvm periodically' },
        Timer: { OnBootSec: a.onBootSec, OnUnitActiveSec: a.every, RandomizedDelaySec: a.splay, Persistent: true },
        Install: { WantedBy: 'timers.target' },
      },
    },
    {
      name: BOOT_UNIT,
      sections: {
        Unit: {
          Description: 'meshvm boot converge (the istio-token and the rest of tmpfs back before the sidecar starts)',
          Wants: 'network-online.target',
          After: 'network-online.target',
          Before: sidecarServiceSpecs(a.flow)
            .map((spec) => `${spec.name}.service`)
            .join(' '),
        },
        Service: { Type: 'oneshot', ExecStart: a.command, TimeoutStartSec: a.bootTimeout, TimeoutStopSec: '15s' },
        Install: { WantedBy: 'multi-user.target' },
      },
    },
  ];
}
