// Env files (cluster.env, sidecar.env) under arbitrary keys and values: each is refused naming the file and key, or bash, sourcing the file as the sidecar's start script does, reads back exactly what was given.
import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { renderEnvFile, renderIstioctlEnv } from '../../recipes/env-file.ts';
import { RenderError } from '../../engine/values.ts';
import { hostileText, Tally } from '../helpers/hostile.ts';

/** The variables bash gives back after sourcing `text` (set -a; . file), in a clean environment. */
function sourceWithBash(text: string, keys: string[]): string[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshvm-env-'));
  try {
    fs.writeFileSync(path.join(dir, 'env'), text);
    // no loop variable (a key named like it would read back the loop's value): each key by indirection on $1
    const script = 'set -a; . "$1" || exit 9; shift; while [ $# -gt 0 ]; do printf "%s\\0" "${!1}"; shift; done';
    const run = spawnSync('/bin/bash', ['-c', script, 'bash', path.join(dir, 'env'), ...keys], { env: {}, encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`bash could not source ${JSON.stringify(text)}: ${run.stderr}`);
    return run.stdout.split('\0').slice(0, -1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// a valid name is prefixed, so that no key is one of bash's own (PPID, UID, RANDOM, _ ...), which bash will not take as given
const key = fc.oneof(
  fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,10}$/).map((k) => `MV_${k}`),
  hostileText(6),
);
const values = fc.dictionary(key, hostileText(12), { maxKeys: 5 });

for (const [name, render] of [
  ['renderEnvFile (the docs quoting)', (v: Record<string, string>) => renderEnvFile(v, { file: '/etc/test.env' })],
  ["renderIstioctlEnv (istioctl's quoting)", (v: Record<string, string>) => renderIstioctlEnv(v, '/etc/test.env')],
] as const) {
  test(`${name}: arbitrary keys and values are refused or read back by bash exactly`, (t) => {
    const tally = new Tally();
    fc.assert(
      fc.property(values, (given) => {
        const text = tally.attempt(() => render(given), RenderError);
        if (text === undefined) return;
        const keys = Object.keys(given);
        assert.deepStrictEqual(sourceWithBash(text, keys), Object.values(given), text);
        assert.strictEqual(text.split('\n').filter(Boolean).length, keys.length, 'one line a variable');
      }),
      { numRuns: 150 },
    );
    t.true(tally.accepted > 10 && tally.refused > 10, `both paths taken: ${tally.accepted} accepted, ${tally.refused} refused`);
  });
}

test('a refusal names the file, the key and the value, and says why', (t) => {
  const error = t.throws(() => renderIstioctlEnv({ ISTIO_META_NETWORK: 'n1\nISTIO_META_CLUSTER_ID=evil' }, '/var/lib/istio/envoy/cluster.env'), {
    instanceOf: RenderError,
  });
  t.is(error.message, 'refusing to write "n1\\nISTIO_META_CLUSTER_ID=evil" into /var/lib/istio/envoy/cluster.env (ISTIO_META_NETWORK): it has a line break');
  t.throws(() => renderEnvFile({ 'A=B': 'x' }, { file: '/etc/x.env' }), {
    message: 'refusing to write "A=B" into /etc/x.env (A=B): it is not an environment variable name (letters, digits and "_")',
  });
  t.throws(() => renderEnvFile({ 'A\nB': 'x' }, { file: '/etc/x.env' }), {
    message: 'refusing to write "A\\nB" into /etc/x.env ("A\\nB"): it has a line break',
  });
  t.throws(() => renderEnvFile({ A: 'tab\there' }), { message: /into an environment file \(A\): it has a control character \(U\+0009\)/ });
  // what a shell line can carry, it carries: quotes, $, backquotes, unicode
  t.deepEqual(sourceWithBash(renderEnvFile({ MV_A: `it's "$(id)" \`x\` é😀` }), ['MV_A']), [`it's "$(id)" \`x\` é😀`]);
});
