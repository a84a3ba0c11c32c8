// Reading guest paths: file content through symlinks resolved inside the root (a last link only where root alone can change it), lstat with owner names, links, listings.
import { constants as fsc } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { FileStat } from '../host.ts';
import type { Owners } from './owners.ts';
import type { RootPaths } from './root-paths.ts';
import { trustedDir, UnsafePathError, untrusted } from './safe-path.ts';

/** Never blocks on a FIFO, never takes a terminal. */
const READ = fsc.O_RDONLY | fsc.O_NONBLOCK | fsc.O_NOCTTY;

/**
 * Content through links resolved inside the root. A link left as the last component (at '/', where the kernel
 * resolves) is followed only in a directory root alone can change: a file an account swaps for a link to a root file
 * between meshvm's lstat and its read is refused, never read (its content would show in a diff).
 */
export async function readText(paths: RootPaths, p: string): Promise<string | undefined> {
  try {
    const real = await paths.resolve(p);
    const handle = await fs.open(real, READ | fsc.O_NOFOLLOW).catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== 'ELOOP') throw error;
      const dir = await fs.stat(path.dirname(real));
      if (!trustedDir(dir))
        throw new UnsafePathError(`refusing to read ${p}: it is a link in ${untrusted(dir)}; meshvm does not follow links an unprivileged account controls`);
      return fs.open(real, READ);
    });
    try {
      return await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
}

/** lstat: a symlink is reported as one, not followed; links in its directory are followed inside the root. */
export async function statOf(paths: RootPaths, owners: Owners, p: string): Promise<FileStat | undefined> {
  let s: import('node:fs').Stats;
  try {
    s = await fs.lstat(await paths.resolveParent(p));
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
  const { owner, group } = await owners.names(s.uid, s.gid);
  return {
    type: s.isFile() ? 'file' : s.isDirectory() ? 'directory' : s.isSymbolicLink() ? 'symlink' : 'other',
    mode: s.mode & 0o7777,
    uid: s.uid,
    gid: s.gid,
    owner,
    group,
    size: s.size,
  };
}

export async function readLinkOf(paths: RootPaths, p: string): Promise<string | undefined> {
  return fs.readlink(await paths.resolveParent(p)).catch((error) => (isMissing(error) || error.code === 'EINVAL' ? undefined : Promise.reject(error)));
}

export async function listDirOf(paths: RootPaths, p: string): Promise<string[] | undefined> {
  return fs.readdir(await paths.resolve(p)).catch((error) => (isMissing(error) ? undefined : Promise.reject(error)));
}

export function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
