// Composites of kinds defined here (so no declaration-line tests): notifications owed when a part changed, even when a later part failed; one read when nothing changed.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { localHost } from '../../engine/host-local.ts';
import { defineResource } from '../../engine/resource.ts';
import { checkComposites } from '../../engine/composite.ts';
import { File } from '../../resources/file.ts';
import { converge, scratchRoot } from '../helpers/scratch.ts';

test('a composite whose first part changed before a later part failed still owes its notifications, and delivers them', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc'));
  const refreshed: string[] = [];
  const Marker = defineResource({
    kind: 'marker',
    schema: z.strictObject({ name: z.string() }),
    key: (spec: { name: string }) => spec.name,
    current: async () => ({}),
    changes: () => ({}),
    refresh: async (_host, spec: { name: string }) => void refreshed.push(spec.name),
  });
  const Pair = defineResource({
    kind: 'pair',
    schema: z.strictObject({ name: z.string() }),
    key: (spec: { name: string }) => spec.name,
    current: async () => ({}),
    changes: () => ({}),
    // the second part's directory does not exist: it fails after the first was written
    children: () => [File({ path: '/etc/first', content: 'one\n' }), File({ path: '/missing/second', content: 'two\n' })],
  });
  const marker = Marker({ name: 'told' });
  const result = await converge(localHost({ root }), [Pair({ name: 'p' }, { notifies: marker }), marker]);
  t.true(result.failed);
  t.is(await fs.readFile(path.join(root, 'etc/first'), 'utf8'), 'one\n');
  t.deepEqual(
    result.notifications.map((n) => [n.ref, n.status, n.because]),
    [['marker[told]', 'refreshed', ['pair[p]']]],
  );
  t.deepEqual(refreshed, ['told']);
});

test('a composite owes when its own apply changed before a part failed; a part owes its own notifications', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc'));
  const refreshed: string[] = [];
  const Marker = defineResource({
    kind: 'marker',
    schema: z.strictObject({ name: z.string() }),
    key: (spec: { name: string }) => spec.name,
    current: async () => ({}),
    changes: () => ({}),
    refresh: async (_host, spec: { name: string }) => void refreshed.push(spec.name),
  });
  const byParent = Marker({ name: 'by-parent' });
  const byPart = Marker({ name: 'by-part' });
  const Own = defineResource({
    kind: 'own',
    schema: z.strictObject({ name: z.string() }),
    key: (spec: { name: string }) => spec.name,
    current: async () => ({ version: 1 }),
    changes: () => ({ version: { from: 1, to: 2 } }),
    apply: async () => {},
    children: () => [File({ path: '/etc/part', content: 'x\n' }, { notifies: byPart }), File({ path: '/missing/second', content: 'two\n' })],
  });
  const result = await converge(localHost({ root }), [Own({ name: 'o' }, { notifies: byParent }), byParent, byPart]);
  t.true(result.failed);
  t.deepEqual(
    result.notifications.map((n) => [n.ref, n.status, n.because]),
    [
      ['marker[by-parent]', 'refreshed', ['own[o]']],
      ['marker[by-part]', 'refreshed', ['own[o] > file[/etc/part]']],
    ],
  );
  t.deepEqual(refreshed, ['by-parent', 'by-part']);
});

test('a composite is read once at plan time and reused by the run while nothing changed; read again after a change', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc'));
  let reads = 0;
  const Counted = defineResource({
    kind: 'counted',
    schema: z.strictObject({ name: z.string() }),
    key: (spec: { name: string }) => spec.name,
    current: async () => ({ read: ++reads }),
    changes: () => ({}),
    children: () => [File({ path: '/etc/part', content: 'x\n' })],
  });
  const run = async (declared: Parameters<typeof checkComposites>[0]) => {
    reads = 0;
    const host = localHost({ root });
    await checkComposites(declared, host);
    t.false((await converge(host, declared)).failed);
    return reads;
  };
  t.is(await run([Counted({ name: 'c' })]), 1, 'nothing changed between the plan-time read and the run');
  t.is(await run([Counted({ name: 'c' })]), 1, 'a no-op converge reads it once');
  t.is(await run([File({ path: '/etc/before', content: 'y\n' }), Counted({ name: 'c' })]), 2, 'a file written before it: read again');
});
