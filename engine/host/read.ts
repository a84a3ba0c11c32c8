// Reading guest paths through the safe walk of safe-path.ts (each directory opened through the one before, a link followed inside the root and only where root alone can change it): file content, lstat with owner names, links, listings.
import { constants as fsc, type Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { FileStat } from '../host.ts';
import type { Owners } from './owners.ts';
import { failure, type OpenDir, type SafeRoot, UnsafePathError, untrusted } from './safe-path.ts';

/** Never blocks on a FIFO, never takes a terminal, never through a link (a link is read and followed by the walk). */
const READ = fsc.O_RDONLY | fsc.O_NONBLOCK | fsc.O_NOCTTY | fsc.O_NOFOLLOW;
/** How many symbolic links one read may pass through as its last component (the kernel's limit). */
const MAX_LINKS = 40;
/** How long a directory opened for reads stays open once nothing uses it (ms): the next read in it skips the walk. */
const LINGER_MS = 100;
/** How many directories reads hold open at most (a read in one more walks to it, uses it and closes it). */
export const MAX_HELD = 64;

export interface GuestReads {
  /** The content of a regular file; undefined when missing. */
  readText(p: string): Promise<string | undefined>;
  /** lstat: a symlink is reported as one, not followed; undefined when missing. */
  stat(owners: Owners, p: string): Promise<FileStat | undefined>;
  /** The target a link names, as written; undefined when missing or not a link. */
  readLink(p: string): Promise<string | undefined>;
  /** The names in a directory (a link to one followed as the walk follows links); undefined when missing or not a directory. */
  listDir(p: string): Promise<string[] | undefined>;
  /** Closes every directory held open: called after anything changed the machine, as the fact cache is forgotten. */
  forget(): void;
}

/**
 * Reads by the safe walk: a link in a directory an account can change (an /etc/certs an account owns, a /tmp-like
 * directory) is refused as it is for a change, so no read is redirected out of the root or at a file meshvm should not
 * read. The directories reads walk to are kept open for the run until anything changes (a no-op converge of 1,000
 * files in one directory walks to it once, as the fact cache resolves it once): a name read in a directory held open
 * cannot be redirected by a rename or a link above it.
 */
export function guestReads(safe: SafeRoot): GuestReads {
  const dirs = heldDirs(safe);

  async function readText(p: string, links: number): Promise<string | undefined> {
    const normal = path.posix.normalize(`/${p}`);
    if (normal === '/') throw Object.assign(new Error(`cannot read ${p}: it is a directory`), { code: 'EISDIR' });
    let target: string | undefined;
    const handle = await dirs.use(path.posix.dirname(normal), p, (dir) => {
      const name = path.posix.basename(normal);
      return fs.open(dir.at(name), READ).catch(async (error: NodeJS.ErrnoException) => {
        if (isMissing(error)) return undefined;
        if (error.code !== 'ELOOP') throw failure(error, 'read', p, dir);
        if (!dir.trusted)
          throw new UnsafePathError(
            `refusing to read ${p}: it is a link in ${untrusted(dir.stat)}; meshvm does not follow links an unprivileged account controls`,
          );
        if (links >= MAX_LINKS) throw Object.assign(new Error(`too many levels of symbolic links at ${p}`), { code: 'ELOOP' });
        const link = await fs.readlink(dir.at(name));
        // posix normalize clamps ".." at "/", as the root directory of a chroot does
        target = path.posix.normalize(link.startsWith('/') ? link : `${dir.guest}/${link}`);
        return undefined;
      });
    });
    if (target !== undefined) {
      const via = target;
      return readText(via, links + 1).catch((error) => {
        throw error instanceof UnsafePathError && !error.message.includes(p) ? new UnsafePathError(`${error.message} (${p} is a link to ${via})`) : error;
      });
    }
    if (!handle) return undefined;
    try {
      const stat = await handle.stat();
      if (stat.isDirectory()) throw Object.assign(new Error(`cannot read ${p}: it is a directory`), { code: 'EISDIR' });
      if (!stat.isFile()) throw new UnsafePathError(`refusing to read ${p}: it is ${kind(stat)}, not a regular file`);
      return await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  }

  /** Runs `look` on the entry p itself in its directory (name undefined for the root); missing: undefined. */
  function entry<T>(p: string, verb: string, look: (dir: OpenDir, name: string | undefined) => Promise<T>): Promise<T | undefined> {
    const normal = path.posix.normalize(`/${p}`);
    const [dir, name] = normal === '/' ? ['/', undefined] : [path.posix.dirname(normal), path.posix.basename(normal)];
    return dirs.use(dir, p, (open) =>
      look(open, name).catch((error) => {
        if (isMissing(error)) return undefined;
        throw failure(error, verb, p, open);
      }),
    );
  }

  return {
    readText: (p) => readText(p, 0),
    async stat(owners, p) {
      const s = await entry(p, 'stat', (dir, name) => (name === undefined ? Promise.resolve(dir.stat) : fs.lstat(dir.at(name))));
      if (!s) return undefined;
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
    },
    readLink: (p) =>
      entry(p, 'read the link', async (dir, name) =>
        name === undefined ? undefined : fs.readlink(dir.at(name)).catch((error) => (error.code === 'EINVAL' ? undefined : Promise.reject(error))),
      ),
    listDir: (p) =>
      dirs.use(path.posix.normalize(`/${p}`), p, (dir) => fs.readdir(dir.at('.')).catch((error) => Promise.reject(failure(error, 'list', p, dir)))),
    forget: () => dirs.forget(),
  };
}

interface Held {
  dir: Promise<OpenDir | undefined>;
  users: number;
  /** Used since the last sweep. */
  used: boolean;
  /** Forgotten: closed once its last user is done. */
  dropped: boolean;
}

/**
 * Directories held open for reads, by guest path. A directory is closed only once no read is using it (its descriptor
 * number is never reused under a read), when anything changed the machine (forget) or when unused for LINGER_MS.
 */
function heldDirs(safe: SafeRoot) {
  const held = new Map<string, Held>();
  let sweeper: NodeJS.Timeout | undefined;

  const close = (entry: Held) => entry.dir.then((dir) => dir?.close()).catch(() => {});

  function sweep() {
    for (const [key, entry] of held) {
      if (entry.users > 0 || entry.used) entry.used = false;
      else {
        held.delete(key);
        void close(entry);
      }
    }
    if (held.size === 0) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  }

  return {
    /** Runs fn in the directory at a guest path (opened by the walk, or held from a read before); missing: undefined. */
    async use<T>(guestDir: string, asked: string, fn: (dir: OpenDir) => Promise<T>): Promise<T | undefined> {
      let entry = held.get(guestDir);
      if (!entry) {
        entry = { dir: safe.findDir(guestDir), users: 0, used: true, dropped: false };
        const made = entry;
        held.set(guestDir, made);
        // a missing directory or a refused walk is not held: the next read walks again
        made.dir.then(
          (dir) => dir === undefined && held.get(guestDir) === made && held.delete(guestDir),
          () => held.get(guestDir) === made && held.delete(guestDir),
        );
        sweeper ??= setInterval(sweep, LINGER_MS).unref();
        if (held.size > MAX_HELD) {
          held.delete(guestDir);
          made.dropped = true;
        }
      }
      entry.users++;
      entry.used = true;
      try {
        const dir = await entry.dir.catch((error) => {
          if (isMissing(error)) return undefined;
          // the walk names the directory it was asked for: the error names the path read
          if (error instanceof UnsafePathError && asked !== guestDir && error.message.startsWith(`refusing ${guestDir}`))
            throw new UnsafePathError(`refusing ${asked}${error.message.slice(`refusing ${guestDir}`.length)}`);
          throw error;
        });
        return dir && (await fn(dir));
      } finally {
        // a directory not held is closed before the read returns: reads never pile up descriptors
        if (--entry.users === 0 && entry.dropped) await close(entry);
      }
    },
    forget() {
      for (const entry of held.values()) {
        entry.dropped = true;
        if (entry.users === 0) void close(entry);
      }
      held.clear();
    },
  };
}

function kind(stat: Stats): string {
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isCharacterDevice()) return 'a character device';
  if (stat.isBlockDevice()) return 'a block device';
  if (stat.isSocket()) return 'a socket';
  return 'not a regular file';
}

export function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
