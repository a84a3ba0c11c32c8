// The runner reads the state of the next few resources (kinds with readAhead) while earlier ones converge; a change on
// the host makes the later ones read again, so what converge sees is what a one-by-one run would have seen.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { localHost } from '../../engine/host-local.ts';
import { defineResource } from '../../engine/resource.ts';
import { File } from '../../resources/file.ts';
import { converge, scratchRoot } from '../helpers/scratch.ts';

/** A kind that reads one file of the root (or, readAhead off, the same without reading ahead), recording its reads. */
function probe(readAhead: boolean, log: string[], inFlight: { now: number; most: number }) {
  return defineResource({
    kind: readAhead ? 'probe' : 'probe_in_turn',
    readAhead,
    schema: z.strictObject({ path: z.string(), want: z.string() }),
    key: (spec: { path: string; want: string }) => spec.path,
    current: async (host, spec: { path: string; want: string }) => {
      inFlight.most = Math.max(inFlight.most, ++inFlight.now);
      log.push(`read ${spec.path}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      inFlight.now--;
      return { content: (await host.readFile(spec.path)) ?? '' };
    },
    changes: (spec: { want: string }, current: { content: string } | undefined) =>
      current?.content === spec.want ? {} : { content: { from: current?.content, to: spec.want } },
    apply: async (host, spec: { path: string; want: string }) => {
      log.push(`write ${spec.path}`);
      await host.writeFile(spec.path, spec.want, { mode: 0o644 });
    },
  });
}

test('reads of readAhead kinds overlap; without it they come one after another', async (t) => {
  for (const readAhead of [true, false]) {
    const root = await scratchRoot(t);
    await fs.mkdir(path.join(root, 'etc'));
    for (const n of [1, 2, 3, 4]) await fs.writeFile(path.join(root, `etc/p${n}`), 'same');
    const log: string[] = [];
    const inFlight = { now: 0, most: 0 };
    const Probe = probe(readAhead, log, inFlight);
    const result = await converge(
      localHost({ root }),
      [1, 2, 3, 4].map((n) => Probe({ path: `/etc/p${n}`, want: 'same' })),
    );
    t.false(result.failed);
    t.deepEqual(
      result.resources.map((r) => r.status),
      ['unchanged', 'unchanged', 'unchanged', 'unchanged'],
    );
    t.is(log.filter((line) => line.startsWith('read')).length, 4, 'each resource read once');
    if (readAhead) t.true(inFlight.most > 1, `reads overlapped (${inFlight.most} at once)`);
    else t.is(inFlight.most, 1);
  }
});

test('a change on the host makes the resources read ahead read again: they see what the change did', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc'));
  await fs.writeFile(path.join(root, 'etc/shared'), 'old');
  const log: string[] = [];
  const Probe = probe(true, log, { now: 0, most: 0 });
  // the File writes /etc/shared; the probe after it was read ahead before the write and must not keep that read
  const declared = [File({ path: '/etc/shared', content: 'new', mode: 0o644 }), Probe({ path: '/etc/shared', want: 'new' })];
  const result = await converge(localHost({ root }), declared);
  t.false(result.failed);
  t.deepEqual(
    result.resources.map((r) => [r.ref, r.status]),
    [
      ['file[/etc/shared]', 'changed'],
      ['probe[/etc/shared]', 'unchanged'],
    ],
    'the probe saw the new content: read again after the write',
  );
  t.deepEqual(log, ['read /etc/shared', 'read /etc/shared'], 'read ahead once, then again after the change; never written');
});

test('after the run changes something, nothing more is read ahead: each read ahead would be forgotten at the next change', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc'));
  for (const n of [1, 2, 3]) await fs.writeFile(path.join(root, `etc/p${n}`), 'old');
  const log: string[] = [];
  const Probe = probe(true, log, { now: 0, most: 0 });
  // p1 and p2 change; p3 is as wanted. Reading ahead after each change would read p3 once per change, and again
  const result = await converge(localHost({ root }), [
    Probe({ path: '/etc/p1', want: 'new' }),
    Probe({ path: '/etc/p2', want: 'new' }),
    Probe({ path: '/etc/p3', want: 'old' }),
  ]);
  t.false(result.failed);
  t.deepEqual(
    result.resources.map((r) => r.status),
    ['changed', 'changed', 'unchanged'],
  );
  // read ahead once before the first change, then each read once more where it converges (the change forgot it)
  t.is(log.filter((line) => line === 'read /etc/p3').length, 2, log.join(', '));
});
