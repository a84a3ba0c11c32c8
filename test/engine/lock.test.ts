// The run lock on an open file: it dies with its holder, a removed lock file is never locked by a waiter, a link is never locked.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { LockBusyError } from '../../engine/errors.ts';
import { acquireLock, LOCK_FILE } from '../../engine/lock.ts';
import { scratchRoot } from '../helpers/scratch.ts';

test('a waiter that gets the lock of a file its holder removed starts again on the file now there; a third run finds it held', async (t) => {
  const root = await scratchRoot(t);
  const first = await acquireLock(root, LOCK_FILE, { waitSeconds: 0, command: 'first' });
  let waiting!: () => void;
  const isWaiting = new Promise<void>((resolve) => (waiting = resolve));
  const second = acquireLock(root, LOCK_FILE, { waitSeconds: 30, command: 'second', onWait: () => waiting() });
  await isWaiting;
  // as a run that made the lock file and failed before planning: the file goes while still locked
  await first.release({ remove: true });
  const held = await second;
  t.teardown(() => held.release());
  // (the new file may reuse the removed one's inode number: what counts is who holds the file at the path)
  t.regex(await fs.readFile(path.join(root, LOCK_FILE), 'utf8'), /"command":"second"/);
  const third = await t.throwsAsync(acquireLock(root, LOCK_FILE, { waitSeconds: 0, command: 'third' }), { instanceOf: LockBusyError });
  t.regex(third?.message ?? '', /held|holds the lock .*: pid \d+, started \S+ \(second\)/);
});

test('release without remove keeps the (emptied) lock file, and the lock is free again', async (t) => {
  const root = await scratchRoot(t);
  const lock = await acquireLock(root, LOCK_FILE, { waitSeconds: 0, command: 'one' });
  await lock.release();
  t.is(await fs.readFile(path.join(root, LOCK_FILE), 'utf8'), '');
  const again = await acquireLock(root, LOCK_FILE, { waitSeconds: 0, command: 'two' });
  await again.release();
  t.pass();
});
