// The run lock shared by every way meshvm starts (cloud-init, Terraform, the timer, by hand): a kernel flock on /run/meshvm.lock, opened by the safe walk.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { LockBusyError } from './errors.ts';
import { failure, safeRoot, UnsafePathError } from './host/safe-path.ts';

export { LOCK_FILE } from './state-paths.ts';
const BUSY = 75;

export interface Holder {
  pid: number;
  startedAt: string;
  command: string;
}

export interface RunLock {
  release(): Promise<void>;
}

/**
 * Takes the lock on a file meshvm opens itself, by the safe walk (a `run` that is a link out of the root, or a lock
 * file that is a link, is refused naming the path), then has flock(1) lock that open file (its descriptor handed to
 * flock as fd 3): the lock belongs to the open file, which only this process keeps open once flock has exited, so the
 * kernel drops it the moment this process dies, even by SIGKILL, and a killed waiter leaves no flock behind holding
 * it. The holder's pid, start time and command are written into the lock file for whoever waits.
 */
export async function acquireLock(
  root: string,
  lockFile: string,
  options: { waitSeconds: number; command: string; onWait?: (holder: Holder | undefined) => void; signal?: AbortSignal },
): Promise<RunLock> {
  const shown = root === '/' ? lockFile : path.join(root, lockFile);
  const handle = await openLockFile(root, lockFile, shown);
  const child = spawn('flock', ['--exclusive', '--wait', String(options.waitSeconds), '--conflict-exit-code', String(BUSY), '3'], {
    stdio: ['ignore', 'ignore', 'pipe', handle.fd],
    detached: true, // a Ctrl-C on the terminal while waiting is meshvm's to handle
  });
  let waitTimer: NodeJS.Timeout | undefined;
  if (options.onWait) {
    waitTimer = setTimeout(() => void readHolder(handle).then(options.onWait), 200);
  }
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
  const holder: Holder = { pid: process.pid, startedAt: new Date().toISOString(), command: options.command };
  await handle.truncate(0);
  await handle.write(JSON.stringify(holder) + '\n', 0);
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      // emptied while still locked, then closed: closing the last descriptor of the open file is the unlock
      await handle.truncate(0).catch(() => {});
      await handle.close();
    },
  };
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
