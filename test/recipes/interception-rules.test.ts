// The interception recipe's rule check on real iptables in a throwaway namespace: Istio's OUTPUT jump before and after 1.23.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { CHECK_RULES } from '../../recipes/interception.ts';
import { scratchRoot } from '../helpers/scratch.ts';

const RULES = (outputJump: string | undefined) =>
  [
    '*nat',
    ':ISTIO_OUTPUT - [0:0]',
    ':ISTIO_REDIRECT - [0:0]',
    ...(outputJump ? [outputJump] : []),
    '-A ISTIO_OUTPUT -m owner --uid-owner 0 -j RETURN',
    '-A ISTIO_OUTPUT -j ISTIO_REDIRECT',
    '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
    'COMMIT',
    '',
  ].join('\n');

for (const [title, jump, ok] of [
  ['Istio up to 1.22: tcp only to ISTIO_OUTPUT', '-A OUTPUT -p tcp -j ISTIO_OUTPUT', true],
  ['Istio 1.23 and later: every protocol to ISTIO_OUTPUT (istio/istio#50915)', '-A OUTPUT -j ISTIO_OUTPUT', true],
  ['no OUTPUT jump: missing, named', undefined, false],
] as const) {
  test(title, async (t) => {
    const ns = `meshvm-icpt-${randomBytes(4).toString('hex')}`;
    await execa('ip', ['netns', 'add', ns]);
    t.teardown(() =>
      execa('ip', ['netns', 'del', ns]).then(
        () => undefined,
        () => undefined,
      ),
    );
    await execa('ip', ['netns', 'exec', ns, 'iptables-restore'], { input: RULES(jump) });
    const dir = await scratchRoot(t);
    await fs.writeFile(path.join(dir, 'cluster.env'), "ISTIO_SERVICE_CIDR='*'\n");
    const result = await execa('ip', ['netns', 'exec', ns, 'sh', '-c', CHECK_RULES, 'sh', dir, 'root'], { reject: false });
    t.is(result.exitCode, ok ? 0 : 1, String(result.stderr));
    if (!ok) t.regex(String(result.stderr), /missing: -A OUTPUT -p tcp -j ISTIO_OUTPUT \(Istio 1\.23 and later: -A OUTPUT -j ISTIO_OUTPUT\)/);
  });
}
