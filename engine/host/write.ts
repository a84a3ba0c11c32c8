// Changing guest paths: atomic file writes (owner and mode first, fsync, rename), directories, symlinks, removal, owner, mode.
import fs from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import path from 'node:path';
import type { MkdirOptions, WriteOptions } from '../host.ts';
import { keepBackup } from './backup.ts';
import type { Owners } from './owners.ts';
import type { RootPaths } from './root-paths.ts';

export interface Place {
  paths: RootPaths;
  owners: Owners;
}

/** The name of the staged file beside a target; fixed, so a leftover from a killed run is replaced, never accumulated. */
export const stagedName = (target: string) => path.join(path.dirname(target), `.${path.basename(target)}.meshvm-new`);

export async function writeFileAtomic({ paths, owners }: Place, p: string, content: string, opts: WriteOptions = {}): Promise<void> {
  const target = paths.real(p);
  await paths.assertInside(target);
  const dir = path.dirname(target);
  const existing = await fs.lstat(target).catch(() => undefined);
  if (!(await fs.stat(dir).catch(() => undefined))?.isDirectory()) {
    throw new Error(`cannot write ${p}: its directory ${path.dirname(p)} does not exist (declare a Directory for it)`);
  }
  const { uid, gid } = await owners.ids(p, opts);
  const mode = opts.mode ?? (existing?.isFile() ? existing.mode & 0o7777 : 0o644);
  // the run lock excludes a concurrent writer of the same temp name
  const temp = stagedName(target);
  await fs.rm(temp, { force: true });
  const handle = await fs.open(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    try {
      const keepUid = uid === -1 && existing ? existing.uid : uid;
      const keepGid = gid === -1 && existing ? existing.gid : gid;
      if (keepUid !== -1 || keepGid !== -1) await handle.chown(keepUid, keepGid);
      await handle.chmod(mode);
      await handle.writeFile(content, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (opts.verify) await opts.verify(temp);
    if (existing?.isFile() && opts.backup !== false) await keepBackup(paths, p, target);
    await fs.rename(temp, target);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
  await syncDir(dir);
}

export async function makeDirectory({ paths, owners }: Place, p: string, opts: MkdirOptions = {}): Promise<void> {
  const target = paths.real(p);
  await paths.assertInside(target);
  const { uid, gid } = await owners.ids(p, opts);
  if (opts.parents === false && !(await fs.stat(path.dirname(target)).catch(() => undefined))?.isDirectory()) {
    throw new Error(`cannot create ${p}: its parent ${path.dirname(p)} does not exist and parents is false`);
  }
  await fs.mkdir(target, { recursive: opts.parents !== false, mode: 0o755 });
  // an existing link to a directory satisfies mkdir: its owner and mode are set where it leads inside the root
  const made = await paths.resolve(p);
  if (uid !== -1 || gid !== -1) await fs.lchown(made, uid, gid);
  await fs.chmod(made, opts.mode ?? 0o755);
}

/** Points the link at guest path p to target, replacing what is there in one rename. */
export async function replaceSymlink(paths: RootPaths, target: string, p: string): Promise<void> {
  const link = paths.real(p);
  await paths.assertInside(link);
  const temp = stagedName(link);
  await fs.rm(temp, { force: true });
  await fs.symlink(target, temp);
  await fs.rename(temp, link);
}

export async function removePath(paths: RootPaths, p: string): Promise<void> {
  const target = paths.real(p);
  await paths.assertInside(target);
  await fs.rm(target, { force: true, recursive: true });
}

/** chmod follows a link, so the link is followed inside the root, as a chroot would, never out to this machine's files. */
export async function chmodPath(paths: RootPaths, p: string, mode: number): Promise<void> {
  await fs.chmod(await paths.resolve(p), mode);
}

/** The path itself (a link, not what it points to), in a directory that stays inside the root. */
export async function chownPath({ paths, owners }: Place, p: string, to: { owner?: string | undefined; group?: string | undefined }): Promise<void> {
  const target = paths.real(p);
  await paths.assertInside(target);
  const { uid, gid } = await owners.ids(p, to);
  await fs.lchown(target, uid, gid);
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
