// The run lock shared by every way meshvm starts (cloud-init, Terraform, the timer, by hand): a kernel flock on /run/meshvm.lock.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { LockBusyError } from './errors.ts';

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
 * Takes the lock through flock(1), which holds it for us: the kernel drops it the moment this process dies, even by
 * SIGKILL (flock's child `cat` sees its stdin close), so a killed run never leaves a stale lock behind. The holder's
 * pid, start time and command are written into the lock file for whoever waits.
 */
export async function acquireLock(
  lockPath: string,
  options: { waitSeconds: number; command: string; onWait?: (holder: Holder | undefined) => void },
): Promise<RunLock> {
  await fs.mkdir(path.dirname(lockPath), { recursive: true });
  const child = spawn('flock', ['--exclusive', '--wait', String(options.waitSeconds), '--conflict-exit-code', String(BUSY), lockPath, 'cat'], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true, // a Ctrl-C on the terminal must not kill the lock holder before we finish the current write
  });
  let waitTimer: NodeJS.Timeout | undefined;
  if (options.onWait) {
    waitTimer = setTimeout(() => void readHolder(lockPath).then(options.onWait), 200);
  }
  try {
    await acquired(child);
  } catch (error) {
    if (error instanceof FlockExit && error.code === BUSY) {
      const holder = await readHolder(lockPath);
      throw new LockBusyError(
        `another meshvm run holds the lock ${lockPath}${holder ? `: pid ${holder.pid}, started ${holder.startedAt} (${holder.command})` : ' (holder unknown)'}; waited ${options.waitSeconds} s. Wait for it to finish, or raise --lock-wait`,
      );
    }
    throw error;
  } finally {
    clearTimeout(waitTimer);
  }
  const holder: Holder = { pid: process.pid, startedAt: new Date().toISOString(), command: options.command };
  await fs.writeFile(lockPath, JSON.stringify(holder) + '\n', { mode: 0o644 });
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      await fs.writeFile(lockPath, '').catch(() => {});
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin?.end();
      await exited;
    },
  };
}

class FlockExit extends Error {
  readonly code: number | null;
  constructor(code: number | null, stderr: string) {
    super(`flock exited ${code}${stderr ? `: ${stderr.trim()}` : ''}`);
    this.code = code;
  }
}

/** cat echoes our probe byte only once flock has the lock and has started it. */
function acquired(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    child.once('error', (error) => reject(new Error(`cannot take the run lock: flock(1) is needed (util-linux): ${error.message}`)));
    child.once('exit', (code) => reject(new FlockExit(code, stderr)));
    child.stdout!.once('data', () => {
      child.removeAllListeners('exit');
      resolve();
    });
    child.stdin!.write('\n');
  });
}

export async function readHolder(lockPath: string): Promise<Holder | undefined> {
  try {
    const holder = JSON.parse(await fs.readFile(lockPath, 'utf8')) as Holder;
    return typeof holder.pid === 'number' ? holder : undefined;
  } catch {
    return undefined;
  }
}
