// The one safe path walk of every change: each directory opened without following a link, links followed inside the root only where root owns them.
import { constants as fsc, type Stats } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';

/** How many symbolic links one path may pass through (the kernel's limit). */
const MAX_LINKS = 40;
const DIR_FLAGS = fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW;
/** Opens the entry itself to repair it: never through a link, never blocking on a FIFO, never taking a terminal. */
const ENTRY_FLAGS = fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK | fsc.O_NOCTTY;
/** meshvm runs as root; under tests it may run as its own account, which it trusts as it trusts root. */
const TRUSTED = new Set([0, process.getuid?.() ?? 0]);

/**
 * A directory whose entries only root can change: owned by root, not writable by others, nor by a group other than
 * root's. Links in it are followed; in any other (an account's own, a world-writable /tmp) they are not.
 */
export function trustedDir(stat: { uid: number; gid: number; mode: number }): boolean {
  return TRUSTED.has(stat.uid) && (stat.mode & 0o002) === 0 && ((stat.mode & 0o020) === 0 || TRUSTED.has(stat.gid));
}

/** A path that the walk refuses: it would leave the root, pass a link an unprivileged account controls, or open what it did not expect. */
export class UnsafePathError extends Error {
  readonly code = 'EUNSAFEPATH';
  constructor(message: string) {
    super(message);
    this.name = 'UnsafePathError';
  }
}

/** A directory held open: what is done in it by name cannot be redirected by a rename or link above it. */
export interface OpenDir {
  /** Its guest path, links resolved. */
  readonly guest: string;
  readonly stat: Stats;
  /** The open directory (fchmod, fchown, fsync on it). */
  readonly handle: FileHandle;
  /** Whether links in it may be followed and hard-linked files in it repaired: only root (or meshvm's own account) can change it. */
  readonly trusted: boolean;
  /** A path naming the entry `name` of this very directory (through /proc/self/fd: openat for calls that take a path). */
  at(name: string): string;
  /** Opens the entry itself (never a link), checking it is a file or directory; undefined when it does not exist. */
  openEntry(name: string, flags?: number): Promise<{ handle: FileHandle; stat: Stats } | undefined>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** One walk's count of links followed, the path asked for (named in errors), and a link that led nowhere. */
interface Walked {
  links: number;
  asked: string;
  dangling?: string;
  /** A read: a component that is a file (or a FIFO, a device) is missing, as ENOTDIR is to a read by path. */
  reading?: boolean;
}

export interface CreateOptions {
  /** The mode of the directory itself when it is created (its missing parents get 0755). */
  mode: number;
}

export interface SafeRoot {
  readonly root: string;
  /** Opens the directory at a guest path; missing: undefined, or created (root-owned) with `create`. */
  openDir(guestPath: string, create?: CreateOptions): Promise<OpenDir | undefined>;
  /** Opens the directory a guest path is in and gives the last component's name; a missing directory is an error naming p. */
  openParent(p: string, create?: CreateOptions): Promise<{ dir: OpenDir; name: string }>;
  /** Where a guest path is on this machine, by the same walk (for tools given a path: verify commands). */
  hostPath(dir: OpenDir, name: string): string;
  /**
   * For reads: the directory at a guest path, by the same walk; undefined when it, or a directory on the way, is
   * missing or not a directory. A link on the way is refused as for a change.
   */
  findDir(guestPath: string): Promise<OpenDir | undefined>;
  /** For reads: the directory a guest path is in and the last component's name (undefined as findDir; '/' has none). */
  findParent(p: string): Promise<{ dir: OpenDir; name: string } | undefined>;
}

/**
 * Guest paths are resolved as systemd-tmpfiles resolves them (chase with CHASE_SAFE): one component at a time, each
 * directory opened with O_NOFOLLOW and the next one opened through it (/proc/self/fd/N/name, Node's openat), a link
 * followed inside the root (an absolute link from the root, ".." stopping at it) and only in a directory root owns:
 * a link in a directory an unprivileged account owns is an "unsafe path transition", refused.
 */
export function safeRoot(root: string): SafeRoot {
  const shown = (guest: string) => (root === '/' ? guest : `${guest} (under the root ${root})`);

  async function openRoot(): Promise<OpenDir> {
    let handle: FileHandle;
    try {
      handle = await fs.open(root, fsc.O_RDONLY | fsc.O_DIRECTORY);
    } catch (error) {
      throw new Error(`cannot open the root ${root}: ${(error as Error).message}`);
    }
    await procMounted(handle);
    return opened(handle, '/', await handle.stat());
  }

  /** Where a link leads on this machine, read as the kernel would outside the root: said when it leads out of the root. */
  function leadsOut(dir: OpenDir, link: string): boolean {
    const onHost = path.resolve(path.join(root, dir.guest), link);
    return root !== '/' && onHost !== root && !onHost.startsWith(`${root}/`);
  }

  function walk(guest: string, create: CreateOptions | undefined, walked: Walked): Promise<OpenDir | undefined> {
    return openRoot().then((top) => descend(top, guest.split('/').filter(Boolean), create, walked));
  }

  /** Opens parts one by one below dir (which it closes); missing: undefined, or made with `create`. */
  async function descend(start: OpenDir, parts: string[], create: CreateOptions | undefined, walked: Walked): Promise<OpenDir | undefined> {
    let dir = start;
    try {
      for (let i = 0; i < parts.length; i++) {
        const name = parts[i]!;
        const here = join(dir.guest, name);
        let next: FileHandle;
        try {
          next = await fs.open(dir.at(name), DIR_FLAGS);
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code === 'ENOENT' && create) {
            await makeDir(dir, name, i === parts.length - 1 ? create.mode : 0o755, here);
            i--; // open what was made, through the same checks
            continue;
          }
          if (code === 'ENOENT') {
            await dir.close();
            return undefined;
          }
          if (code !== 'ELOOP' && code !== 'ENOTDIR') throw error;
          const link = await fs.readlink(dir.at(name)).catch(() => undefined);
          if (link === undefined && walked.reading) {
            await dir.close();
            return undefined;
          }
          if (link === undefined) throw new UnsafePathError(`cannot use ${shown(walked.asked)}: ${here} is a ${await kindOf(dir, name)}, not a directory`);
          if (!dir.trusted) {
            throw new UnsafePathError(
              `refusing ${shown(walked.asked)}: ${here} is a link (to ${link}) in ${dir.guest}, ${untrusted(dir.stat)}; ` +
                'meshvm does not follow links an unprivileged account controls (an unsafe path transition)',
            );
          }
          if (++walked.links > MAX_LINKS) throw Object.assign(new Error(`too many levels of symbolic links at ${shown(walked.asked)}`), { code: 'ELOOP' });
          // posix normalize clamps ".." at "/", as the root directory of a chroot does
          const target = path.posix.normalize(link.startsWith('/') ? link : `${dir.guest}/${link}`);
          const out = leadsOut(dir, link);
          await dir.close();
          // what the link names must exist: a missing one is not made (mkdir -p in a chroot fails on a dangling link too)
          const reached = await walk(target, undefined, walked);
          if (!reached) {
            walked.dangling =
              `${here} is a link to ${link}, which ${out ? `resolves outside the root ${root} on this machine and ` : ''}leads nowhere inside the root ` +
              '(meshvm follows links inside the root, as a chroot would, never out of it)';
            if (create) throw new UnsafePathError(`cannot create ${shown(walked.asked)}: ${walked.dangling}`);
            return undefined;
          }
          return await descend(reached, parts.slice(i + 1), create, walked);
        }
        const stat = await next.stat();
        await dir.close();
        dir = opened(next, here, stat);
      }
      return dir;
    } catch (error) {
      await dir.close();
      throw error;
    }
  }

  return {
    root,
    openDir: (guestPath, create) => walk(guestPath, create, { links: 0, asked: guestPath }),
    async openParent(p, create) {
      const normal = path.posix.normalize(`/${p}`);
      const parent = path.posix.dirname(normal);
      const name = path.posix.basename(normal);
      if (!name) throw new UnsafePathError(`cannot change the root directory itself (${shown('/')}) this way`);
      const walked: Walked = { links: 0, asked: p };
      const dir = await walk(parent, create, walked);
      if (!dir) {
        const why = walked.dangling ?? `its directory ${parent} does not exist (declare a Directory for it)`;
        throw Object.assign(new Error(`cannot change ${shown(p)}: ${why}`), { code: 'ENOENT', throughLink: walked.dangling !== undefined });
      }
      return { dir, name };
    },
    hostPath: (dir, name) => path.join(root, dir.guest, name),
    findDir: (guestPath) => walk(guestPath, undefined, { links: 0, asked: guestPath, reading: true }),
    async findParent(p) {
      const normal = path.posix.normalize(`/${p}`);
      const name = path.posix.basename(normal);
      if (!name) return undefined;
      const dir = await walk(path.posix.dirname(normal), undefined, { links: 0, asked: p, reading: true });
      return dir && { dir, name };
    },
  };
}

function opened(handle: FileHandle, guest: string, stat: Stats): OpenDir {
  let closed = false;
  const at = (name: string) => `/proc/self/fd/${handle.fd}/${name}`;
  return {
    guest,
    stat,
    handle,
    trusted: trustedDir(stat),
    at,
    async openEntry(name, flags = ENTRY_FLAGS) {
      let entry: FileHandle;
      try {
        entry = await fs.open(at(name), flags | fsc.O_NOFOLLOW);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return undefined;
        if (code === 'ELOOP') throw new UnsafePathError(`${join(guest, name)} is a link; meshvm changes the file itself, never through a link`);
        throw error;
      }
      const stat = await entry.stat();
      if (!stat.isFile() && !stat.isDirectory()) {
        await entry.close();
        throw new UnsafePathError(`${join(guest, name)} is not a file or directory; meshvm will not change it`);
      }
      return { handle: entry, stat };
    },
    sync: () => handle.sync(),
    async close() {
      if (closed) return;
      closed = true;
      await handle.close();
    },
  };
}

let procChecked: Promise<void> | undefined;

/** The walk opens through /proc/self/fd: without /proc (a bare chroot) every change would fail with a puzzling ENOENT. */
function procMounted(handle: FileHandle): Promise<void> {
  procChecked ??= fs.stat(`/proc/self/fd/${handle.fd}`).then(
    () => undefined,
    async (error) => {
      procChecked = undefined;
      await handle.close();
      throw new Error(`meshvm needs /proc mounted: it reaches every path it changes through /proc/self/fd (${(error as Error).message})`);
    },
  );
  return procChecked;
}

/** mkdir in an open directory, root-owned (the mode set on the made directory, whatever the umask); one made meanwhile is fine. */
async function makeDir(dir: OpenDir, name: string, mode: number, guest: string): Promise<void> {
  try {
    await fs.mkdir(dir.at(name), { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw Object.assign(new Error(`cannot create the directory ${guest}: ${(error as Error).message}`), { code: (error as NodeJS.ErrnoException).code });
  }
  const made = await fs.open(dir.at(name), DIR_FLAGS);
  try {
    await made.chown(0, 0).catch(() => {}); // as an unprivileged test user: its own
    await made.chmod(mode);
  } finally {
    await made.close();
  }
}

async function kindOf(dir: OpenDir, name: string): Promise<string> {
  const st = await fs.lstat(dir.at(name)).catch(() => undefined);
  return !st ? 'missing entry' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'link' : 'special file';
}

/** Why a directory is not trusted, for errors: "a directory owned by uid 4242, not root", "a directory others can write". */
export function untrusted(stat: { uid: number; gid: number; mode: number }): string {
  if (!TRUSTED.has(stat.uid)) return `a directory owned by uid ${stat.uid}, not root`;
  return (stat.mode & 0o002) !== 0 ? 'a directory anyone can write' : `a directory group ${stat.gid} can write`;
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** The name of the staged file beside a target; fixed, so a leftover from a killed run is replaced (or removed with it), never accumulated. */
export const stagedName = (name: string) => `.${name}.meshvm-new`;
export const CREATE_NEW = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;

export async function unlinkIfThere(at: string): Promise<void> {
  await fs.unlink(at).catch((error) => (error.code === 'ENOENT' ? undefined : Promise.reject(error)));
}

/**
 * A system error that names the guest path (ENOSPC, EIO, EACCES name no file, or a /proc/self/fd one), its code
 * kept. Errors that name it already pass as they are.
 */
export function failure(error: unknown, verb: string, p: string, dir: OpenDir): Error {
  const original = error as NodeJS.ErrnoException;
  // meshvm's own errors (a refused checksum, a verify command) say what they are about already
  if (!(original instanceof Error) || original instanceof UnsafePathError || typeof original.code !== 'string') return original;
  const message = original.message.replace(/\/proc\/self\/fd\/\d+\//g, dir.guest === '/' ? '/' : `${dir.guest}/`);
  if (message.includes(p) && message === original.message) return original;
  return Object.assign(new Error(message.includes(p) ? message : `cannot ${verb} ${p}: ${message}`), { code: original.code });
}
