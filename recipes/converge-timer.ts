// Recipe converge-timer: meshvm's own units: a boot converge ordered before the sidecar, and a timer re-converging every
// half hour with a splay across the fleet.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { Service } from '../resources/service.ts';
import { SystemdUnit, type systemdUnitSpec, unitPath } from '../resources/systemd-unit.ts';
import { ownFiles } from './undo.ts';
import { flow, sidecarServiceSpecs } from './mesh.ts';

const duration = z.string().regex(/^\d+(us|ms|s|min|h|d)?( \d+(us|ms|s|min|h|d)?)*$/, 'expected a systemd time span such as 30min or 1h 30min');

type SystemdUnitInput = z.input<typeof systemdUnitSpec>;

/** The boot converge: what lives on tmpfs (the istio-token) is back before the sidecar starts. */
export const BOOT_UNIT = 'meshvm-boot.service';

export const convergeTimer = defineRecipe({
  name: 'converge-timer',
  description:
    'meshvm-boot.service (a converge at boot, before the sidecar starts, bounded), meshvm.service (oneshot converge) and meshvm.timer (OnBootSec, OnUnitActiveSec, RandomizedDelaySec), enabled.',
  attributes: z.strictObject({
    flow,
    /** The converge the timer runs (argv joined with spaces; systemd splits it). */
    command: z.string().default('/usr/local/bin/meshvm converge /etc/meshvm/runlist.yaml'),
    onBootSec: duration.default('2min'),
    every: duration.default('30min'),
    /** Splay: each run is delayed by a random time up to this, so a fleet does not converge at once. */
    splay: duration.default('5min'),
    /**
     * How long the boot converge may hold the sidecar's start: a control plane that does not answer must not hold the
     * boot; the sidecar then starts anyway, and the timer completes the converge later.
     */
    bootTimeout: duration.default('90s'),
  }),
  declare: (a) => {
    const [service, timer, boot] = units(a);
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
    const own = await ownFiles(ctx, units(a).map(unitPath));
    const isOwn = (name: string) => own.includes(unitPath({ name }));
    return [
      isOwn('meshvm.timer') && Service({ name: 'meshvm.timer', enabled: false, running: false }),
      isOwn(BOOT_UNIT) && Service({ name: BOOT_UNIT, enabled: false }),
      ...units(a)
        .filter((unit) => own.includes(unitPath(unit)))
        .map((unit) => SystemdUnit({ ...unit, ensure: 'absent' })),
    ];
  },
});

/** meshvm's three units, as declare writes them and undo removes them. */
function units(a: {
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
