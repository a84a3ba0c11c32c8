// Composites at plan time: a part that conflicts with another declaration, and a kind that needs the running system under an offline root, fail before anything changes.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { localHost } from '../../engine/host-local.ts';
import { checkComposites } from '../../engine/composite.ts';
import { InputError } from '../../engine/errors.ts';
import { File } from '../../resources/file.ts';
import { SystemdUnit } from '../../resources/systemd-unit.ts';
import { converge, meshvm, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';

test('a part of a composite declared differently elsewhere: the plan fails naming both declaration lines, nothing written', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const file = await writeRunlist(
    dir,
    'conflict.yaml',
    [
      'name: conflict',
      'recipes:',
      '  - recipe: files',
      '    attributes:',
      '      directories: [{ path: /etc/systemd/system }]',
      '      files: [{ path: /etc/systemd/system/meshvm.service, content: "[Service]\\nExecStart=/bin/true\\n" }]',
      '  - recipe: converge-timer',
      '',
    ].join('\n'),
  );
  const before = await snapshot(root);
  for (const command of ['plan', 'converge']) {
    const result = await meshvm([command, file, '--root', root]);
    t.is(result.exitCode, 1, command);
    t.regex(
      result.stderr,
      /file\[\/etc\/systemd\/system\/meshvm\.service\]: declared twice with different specs: at recipes\/files\.ts:\d+ and, as a part of systemd_unit\[\/etc\/systemd\/system\/meshvm\.service\], at recipes\/converge-timer\.ts:\d+/,
      command,
    );
  }
  t.deepEqual(await snapshot(root), before, 'nothing written, not even the report');
});

test('checkComposites and the runner agree: the same part declared equally is fine, differently is an InputError', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc/systemd/system'), { recursive: true });
  const unit = SystemdUnit({ name: 'demo.service', content: '[Service]\nExecStart=/bin/true\n' });
  const same = File({ path: '/etc/systemd/system/demo.service', content: '[Service]\nExecStart=/bin/true\n', mode: 0o644, owner: 'root', group: 'root' });
  await t.notThrowsAsync(checkComposites([same, unit], localHost({ root })));
  const other = File({ path: '/etc/systemd/system/demo.service', content: 'something else\n' });
  const error = await t.throwsAsync(checkComposites([other, unit], localHost({ root })), { instanceOf: InputError });
  t.regex(
    error!.message,
    /declared twice with different specs: at test\/engine\/composite\.test\.ts:\d+ and, as a part of systemd_unit\[\/etc\/systemd\/system\/demo\.service\], at test\/engine\/composite\.test\.ts:\d+/,
  );
  // the runner checks again when it expands the composite (the machine may have changed since the plan)
  const result = await converge(localHost({ root }), [other, unit]);
  t.deepEqual(
    result.resources.map((r) => r.status),
    ['changed', 'failed'],
  );
  t.regex(result.resources[1]!.error!, /declared twice with different specs/);
});

test('a kind that needs the running system under an offline root: exit 1 naming the resource, nothing written', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const file = await writeRunlist(
    dir,
    'pkg.yaml',
    ['name: pkg', 'recipes:', '  - recipe: dns', '    attributes:', '      clusterDns: 10.0.0.10', '      controlPlane: []', '      resolver: none', ''].join(
      '\n',
    ),
  );
  const before = await snapshot(root);
  const result = await meshvm(['converge', file, '--root', root]);
  t.is(result.exitCode, 1);
  t.regex(
    result.stderr,
    /package\[dnsmasq\] \(declared at recipes\/dns\.ts:\d+\): needs the running system \(apt and dpkg install packages on the machine itself\), and --root \S+ is an offline root; nothing was changed/,
  );
  t.deepEqual(await snapshot(root), before);
});
