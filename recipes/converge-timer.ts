// Recipe converge-timer: meshvm's own service and timer, re-converging every half hour with a splay across the fleet.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { Service } from '../resources/service.ts';
import { SystemdUnit } from '../resources/systemd-unit.ts';

const duration = z.string().regex(/^\d+(us|ms|s|min|h|d)?( \d+(us|ms|s|min|h|d)?)*$/, 'expected a systemd time span such as 30min or 1h 30min');

export const convergeTimer = defineRecipe({
  name: 'converge-timer',
  description: 'meshvm.service (oneshot converge) and meshvm.timer (OnBootSec, OnUnitActiveSec, RandomizedDelaySec), enabled.',
  attributes: z.strictObject({
    /** The converge the timer runs (argv joined with spaces; systemd splits it). */
    command: z.string().default('/usr/local/bin/meshvm converge /etc/meshvm/runlist.yaml'),
    onBootSec: duration.default('2min'),
    every: duration.default('30min'),
    /** Splay: each run is delayed by a random time up to this, so a fleet does not converge at once. */
    splay: duration.default('5min'),
  }),
  declare: (a) => [
    SystemdUnit({
      name: 'meshvm.service',
      sections: {
        Unit: {
          Description: 'meshvm converge (renews certificates and tokens, repairs drift)',
          Wants: 'network-online.target',
          After: 'network-online.target',
        },
        Service: { Type: 'oneshot', ExecStart: a.command, TimeoutStartSec: '15min' },
      },
    }),
    SystemdUnit({
      name: 'meshvm.timer',
      sections: {
        Unit: { Description: 'Re-converge meshvm periodically' },
        Timer: { OnBootSec: a.onBootSec, OnUnitActiveSec: a.every, RandomizedDelaySec: a.splay, Persistent: true },
        Install: { WantedBy: 'timers.target' },
      },
    }),
    Service({ name: 'meshvm.timer', enabled: true, running: true }),
  ],
});
