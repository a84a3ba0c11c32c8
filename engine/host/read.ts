// Reading guest paths: file content through symlinks resolved inside the root, lstat with owner names, links, listings.
import fs from 'node:fs/promises';
import type { FileStat } from '../host.ts';
import type { Owners } from './owners.ts';
import type { RootPaths } from './root-paths.ts';

export async function readText(paths: RootPaths, p: string): Promise<string | undefined> {
  try {
    return await fs.readFile(await paths.resolve(p), 'utf8');
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
