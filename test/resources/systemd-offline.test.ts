// Units and services in an offline root (an image being built): systemctl --root enables them; nothing is started.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SystemdUnit } from '../../resources/systemd-unit.ts';
import { Service } from '../../resources/service.ts';
import { convergesOnce, scratchRoot } from '../helpers/scratch.ts';

test('a service and its timer are written and enabled in an offline root, then nothing to do', async (t) => {
  const root = await scratchRoot(t);
  const declare = () => {
    const timer = SystemdUnit({
      name: 'meshvm.timer',
      sections: { Timer: { OnUnitActiveSec: '30min', RandomizedDelaySec: '5min' }, Install: { WantedBy: 'timers.target' } },
    });
    return [
      SystemdUnit({ name: 'meshvm.service', sections: { Service: { Type: 'oneshot', ExecStart: '/usr/local/bin/meshvm converge /etc/meshvm/runlist.yaml' } } }),
      timer,
      Service({ name: 'meshvm.timer', enabled: true }),
    ];
  };
  await convergesOnce(t, root, declare);
  const link = await fs.readlink(path.join(root, 'etc/systemd/system/timers.target.wants/meshvm.timer'));
  t.regex(link, /\/etc\/systemd\/system\/meshvm\.timer$/);
  t.regex(await fs.readFile(path.join(root, 'etc/systemd/system/meshvm.timer'), 'utf8'), /RandomizedDelaySec=5min/);
});
