// Changing guest paths through the safe walk: atomic file writes (0600 and owner before content, fsync, rename), directories, symlinks, removal, owner, mode.
import fs, { type FileHandle } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import path from 'node:path';
import type { MkdirOptions, WriteOptions } from '../host.ts';
import { dropBackups, keepBackup } from './backup.ts';
import type { Owners } from './owners.ts';
import { CREATE_NEW, failure, stagedName, unlinkIfThere, UnsafePathError, untrusted, type OpenDir, type SafeRoot } from './safe-path.ts';

export interface Place {
  safe: SafeRoot;
  owners: Owners;
}

/**
 * The staged file is made 0600, given its owner, then its content, synced, and only then its mode: a run killed
 * mid-way leaves at most `.name.meshvm-new` that the file's owner alone can read, replaced by the next write of the
 * file and removed with it. (Not O_TMPFILE: naming it needs linkat(AT_EMPTY_PATH or AT_SYMLINK_FOLLOW), which Node
 * lacks, and a verify command needs a name to check.) A sensitive file keeps no backups (and old ones of it are removed).
 */
export async function writeFileAtomic({ safe, owners }: Place, p: string, content: string, opts: WriteOptions = {}): Promise<void> {
  const { uid, gid } = await owners.ids(p, opts);
  const { dir, name } = await safe.openParent(p);
  const temp = stagedName(name);
  let staged = false;
  try {
    const existing = await fs.lstat(dir.at(name)).catch(ignoreMissing);
    if (existing?.isDirectory()) throw new Error(`cannot write ${p}: it is a directory`);
    const mode = opts.mode ?? (existing?.isFile() ? existing.mode & 0o7777 : 0o644);
    await unlinkIfThere(dir.at(temp));
    const handle = await fs.open(dir.at(temp), CREATE_NEW, 0o600);
    staged = true;
    let made: import('node:fs').Stats;
    try {
      const keepUid = uid === -1 && existing ? existing.uid : uid;
      const keepGid = gid === -1 && existing ? existing.gid : gid;
      if (keepUid !== -1 || keepGid !== -1) await handle.chown(keepUid, keepGid);
      await handle.writeFile(content, 'utf8');
      await handle.sync();
      await handle.chmod(mode);
      made = await handle.stat();
    } finally {
      await handle.close();
    }
    if (opts.verify) await opts.verify(safe.hostPath(dir, temp));
    if (opts.sensitive) await dropBackups(safe, p);
    else if (existing?.isFile() && opts.backup !== false) await backUp(safe, dir, name, p);
    await stillOurs(dir, temp, made, p);
    await fs.rename(dir.at(temp), dir.at(name));
    staged = false;
    await dir.sync();
  } catch (error) {
    if (staged) await unlinkIfThere(dir.at(temp)).catch(() => {});
    throw failure(error, 'write', p, dir);
  } finally {
    await dir.close();
  }
}

export async function makeDirectory({ safe, owners }: Place, p: string, opts: MkdirOptions = {}): Promise<void> {
  const { uid, gid } = await owners.ids(p, opts);
  const { dir, name } = await safe.openParent(p, opts.parents === false ? undefined : { mode: 0o755 }).catch((error) => {
    if (opts.parents === false && error.code === 'ENOENT' && !error.throughLink) {
      throw new Error(`cannot create ${p}: its parent ${path.posix.dirname(p)} does not exist and parents is false`);
    }
    throw error;
  });
  try {
    await fs.mkdir(dir.at(name), { mode: 0o700 }).catch((error) => (error.code === 'EEXIST' ? undefined : Promise.reject(error)));
  } catch (error) {
    throw failure(error, 'create', p, dir);
  } finally {
    await dir.close();
  }
  // an existing link to a directory satisfies mkdir: its owner and mode are set where it leads inside the root (a link root owns)
  const made = await safe.openDir(p);
  if (!made) throw new Error(`cannot create ${p}: it vanished while being made`);
  try {
    if (uid !== -1 || gid !== -1) await made.handle.chown(uid, gid);
    await made.handle.chmod(opts.mode ?? 0o755);
  } catch (error) {
    throw failure(error, 'set the owner and mode of', p, made);
  } finally {
    await made.close();
  }
}

/** Points the link at guest path p to target, replacing what is there in one rename (a file replaced is kept as a backup). */
export async function replaceSymlink(safe: SafeRoot, target: string, p: string): Promise<void> {
  const { dir, name } = await safe.openParent(p);
  const temp = stagedName(name);
  try {
    const existing = await fs.lstat(dir.at(name)).catch(ignoreMissing);
    if (existing?.isDirectory()) throw new Error(`${p} is a directory; meshvm will not replace a directory with a link`);
    if (existing?.isFile()) await backUp(safe, dir, name, p);
    await unlinkIfThere(dir.at(temp));
    await fs.symlink(target, dir.at(temp));
    await fs.rename(dir.at(temp), dir.at(name));
  } catch (error) {
    await unlinkIfThere(dir.at(temp)).catch(() => {});
    throw failure(error, 'link', p, dir);
  } finally {
    await dir.close();
  }
}

/** Removes a path (a directory with what is in it, each level opened without following links), and a staged leftover of it. */
export async function removePath(safe: SafeRoot, p: string): Promise<void> {
  // a missing directory: nothing to remove; one that is a link leading nowhere in the root: refused, naming the link
  const found = await safe.openParent(p).catch((error) => (error.code === 'ENOENT' && !error.throughLink ? undefined : Promise.reject(error)));
  if (!found) return;
  const { dir, name } = found;
  try {
    await removeEntry(dir.at(name));
    await unlinkIfThere(dir.at(stagedName(name)));
  } catch (error) {
    throw failure(error, 'remove', p, dir);
  } finally {
    await dir.close();
  }
}

/** fchmod on the file itself, opened without following a link: a link swapped in after the read is refused, never followed. */
export async function chmodPath({ safe }: Place, p: string, mode: number): Promise<void> {
  await onEntry(safe, p, 'set the mode of', (handle) => handle.chmod(mode));
}

/** fchown on the file itself, as chmodPath. */
export async function chownPath({ safe, owners }: Place, p: string, to: { owner?: string | undefined; group?: string | undefined }): Promise<void> {
  const { uid, gid } = await owners.ids(p, to);
  await onEntry(safe, p, 'set the owner of', (handle) => handle.chown(uid, gid));
}

async function onEntry(safe: SafeRoot, p: string, verb: string, change: (handle: FileHandle) => Promise<void>): Promise<void> {
  const { dir, name } = await safe.openParent(p);
  try {
    const entry = await dir.openEntry(name);
    if (!entry) throw Object.assign(new Error(`cannot ${verb} ${p}: it does not exist`), { code: 'ENOENT' });
    try {
      // a second name for a root file, made by an account that owns the directory (fs.protected_hardlinks off): not repaired
      if (!dir.trusted && entry.stat.isFile() && entry.stat.nlink > 1) {
        throw new UnsafePathError(`refusing to ${verb} ${p}: it has ${entry.stat.nlink} hard links in ${untrusted(dir.stat)}`);
      }
      await change(entry.handle);
    } finally {
      await entry.handle.close();
    }
  } catch (error) {
    throw failure(error, verb, p, dir);
  } finally {
    await dir.close();
  }
}

/** The replaced file's content, read through the open directory, kept under the backup directory. */
async function backUp(safe: SafeRoot, dir: OpenDir, name: string, p: string): Promise<void> {
  const entry = await dir.openEntry(name);
  if (!entry) return;
  try {
    if (entry.stat.isFile()) await keepBackup(safe, p, await entry.handle.readFile());
  } finally {
    await entry.handle.close();
  }
}

/** The staged name still names the file written (an account owning the directory could have swapped it): renamed only then. */
async function stillOurs(dir: OpenDir, temp: string, made: import('node:fs').Stats, p: string): Promise<void> {
  const now = await fs.lstat(dir.at(temp)).catch(ignoreMissing);
  if (!now || now.ino !== made.ino || now.dev !== made.dev)
    throw new UnsafePathError(`the staged file of ${p} was replaced while it was written; not installing it`);
}

async function removeEntry(at: string): Promise<void> {
  const stat = await fs.lstat(at).catch(ignoreMissing);
  if (!stat) return;
  if (!stat.isDirectory()) return unlinkIfThere(at);
  const handle = await fs.open(at, fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW);
  try {
    const inside = `/proc/self/fd/${handle.fd}`;
    for (const name of await fs.readdir(inside)) await removeEntry(`${inside}/${name}`);
  } finally {
    await handle.close();
  }
  await fs.rmdir(at);
}

function ignoreMissing(error: NodeJS.ErrnoException): undefined {
  if (error.code === 'ENOENT') return undefined;
  throw error;
}
