// The run lock shared by every way meshvm starts (cloud-init, Terraform, the timer, by hand): a kernel flock on /run/meshvm.lock, opened by the safe walk.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { LockBusyError } from './errors.ts';
import { childEnvironment } from './host/exec.ts';
import { failure, safeRoot, UnsafePathError } from './host/safe-path.ts';

export { LOCK_FILE } from './state-paths.ts';
const BUSY = 75;

export interface Holder {
  pid: number;
  startedAt: string;
  command: string;
}

export interface RunLock {
  /** Unlocks; `remove` unlinks the lock file first, while it is still locked (a run that made it and failed before planning). */
  release(opts?: { remove?: boolean }): Promise<void>;
}

/**
 * Takes the lock on a file meshvm opens itself, by the safe walk (a `run` that is a link out of the root, or a lock
 * file that is a link, is refused naming the path), then has flock(1) lock that open file (its descriptor handed to
 * flock as fd 3): the lock belongs to the open file, which only this process keeps open once flock has exited, so the
 * kernel drops it the moment this process dies, even by SIGKILL (the flock of a killed waiter, once it gets the lock,
 * exits and so drops it). The holder's pid, start time and command are written into the lock file for whoever waits.
 */
export async function acquireLock(
  root: string,
  lockFile: string,
  options: { waitSeconds: number; command: string; onWait?: (holder: Holder | undefined) => void; signal?: AbortSignal },
): Promise<RunLock> {
  const shown = root === '/' ? lockFile : path.join(root, lockFile);
  const until = Date.now() + options.waitSeconds * 1000;
  let handle: FileHandle;
  for (;;) {
    handle = await openLockFile(root, lockFile, shown);
    await lockOpenFile(handle, Math.max(0, (until - Date.now()) / 1000), shown, options);
    // a run that failed before planning removes the lock file it made while still holding it: a waiter that got the
    // lock of that removed file has locked nothing anyone else will see, and starts again on the file now there
    if ((await handle.stat()).nlink > 0) break;
    await handle.close();
  }
  const holder: Holder = { pid: process.pid, startedAt: new Date().toISOString(), command: options.command };
  await handle.truncate(0);
  await handle.write(JSON.stringify(holder) + '\n', 0);
  let released = false;
  return {
    async release(opts = {}) {
      if (released) return;
      released = true;
      await handle.truncate(0).catch(() => {});
      if (opts.remove) await removeLockFile(root, lockFile, handle).catch(() => {});
      // closing the last descriptor of the open file is the unlock: after the file was emptied (and removed)
      await handle.close();
    },
  };
}

/** flock(1) locks the open file (fd 3), waiting up to waitSeconds; the lock stays with the file once flock exits. */
async function lockOpenFile(
  handle: FileHandle,
  waitSeconds: number,
  shown: string,
  options: { waitSeconds: number; onWait?: (holder: Holder | undefined) => void; signal?: AbortSignal | undefined },
): Promise<void> {
  const child = spawn('flock', ['--exclusive', '--wait', waitSeconds.toFixed(3), '--conflict-exit-code', String(BUSY), '3'], {
    stdio: ['ignore', 'ignore', 'pipe', handle.fd],
    env: childEnvironment(),
    detached: true, // a Ctrl-C on the terminal while waiting is meshvm's to handle
  });
  const { onWait } = options;
  const waitTimer = onWait && setTimeout(() => void readHolder(handle).then(onWait), 200);
  // SIGINT/SIGTERM while waiting: stop waiting (flock is in its own process group, so the terminal's signal missed it)
  const stopWaiting = () => child.kill();
  options.signal?.addEventListener('abort', stopWaiting, { once: true });
  try {
    await acquired(child);
  } catch (error) {
    clearTimeout(waitTimer);
    const holder = await readHolder(handle);
    await handle.close();
    if (options.signal?.aborted) throw new Error(`stopped waiting for the run lock ${shown}`);
    if (error instanceof FlockExit && error.code === BUSY) {
      throw new LockBusyError(
        `another meshvm run holds the lock ${shown}${holder ? `: pid ${holder.pid}, started ${holder.startedAt} (${holder.command})` : ' (holder unknown)'}; waited ${options.waitSeconds} s. Wait for it to finish, or raise --lock-wait`,
      );
    }
    throw error;
  } finally {
    clearTimeout(waitTimer);
    options.signal?.removeEventListener('abort', stopWaiting);
  }
}

/** Unlinks the lock file if its name still names the file locked (by the safe walk). */
async function removeLockFile(root: string, lockFile: string, handle: FileHandle): Promise<void> {
  const { dir, name } = await safeRoot(root).openParent(lockFile);
  try {
    const [ours, there] = await Promise.all([handle.stat(), fs.lstat(dir.at(name))]);
    if (ours.ino === there.ino && ours.dev === there.dev) await fs.unlink(dir.at(name));
  } finally {
    await dir.close();
  }
}

/** The lock file, created 0644 if missing (and its directory, 0755), opened by the safe walk and never through a link. */
async function openLockFile(root: string, lockFile: string, shown: string): Promise<FileHandle> {
  const { dir, name } = await safeRoot(root).openParent(lockFile, { mode: 0o755 });
  try {
    const handle = await fs.open(dir.at(name), fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW | fsc.O_NONBLOCK, 0o644).catch((error) => {
      if (error.code === 'ELOOP') throw new UnsafePathError(`the lock file ${shown} is a link; meshvm takes its lock only on a file of its own`);
      throw failure(error, 'open the lock file', lockFile, dir);
    });
    if (!(await handle.stat()).isFile()) {
      await handle.close();
      throw new UnsafePathError(`the lock file ${shown} is not a regular file`);
    }
    return handle;
  } finally {
    await dir.close();
  }
}

class FlockExit extends Error {
  readonly code: number | null;
  constructor(code: number | null, stderr: string) {
    super(`flock exited ${code}${stderr ? `: ${stderr.trim()}` : ''}`);
    this.code = code;
  }
}

/** flock exits 0 once the open file is locked (the lock stays with it), 75 when it waited in vain. */
function acquired(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    child.once('error', (error) => reject(new Error(`cannot take the run lock: flock(1) is needed (util-linux): ${error.message}`)));
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new FlockExit(code, stderr))));
  });
}

/** Who holds the lock, as written in the lock file (read through the open file, not by path). */
export async function readHolder(handle: FileHandle): Promise<Holder | undefined> {
  try {
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(4096), 0, 4096, 0);
    const holder = JSON.parse(buffer.subarray(0, bytesRead).toString('utf8')) as Holder;
    return typeof holder.pid === 'number' ? holder : undefined;
  } catch {
    return undefined;
  }
}
