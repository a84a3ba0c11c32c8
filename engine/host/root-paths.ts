// Guest paths on this machine for tools (commands, downloads): mapped under the root, symlinks resolved inside it as a chroot would (reads and writes: safe-path.ts).
import fs from 'node:fs/promises';
import path from 'node:path';
import { mapUnderRoot } from '../paths.ts';

/** How many symbolic links one path may pass through (the kernel's limit). */
const MAX_LINKS = 40;

export interface RootPaths {
  /** The directory every guest path is mapped under ('/' on a real machine). */
  readonly root: string;
  /** Where a guest path lives on this machine; symlinks are not followed. */
  real(guestPath: string): string;
  /**
   * The real path with every symlink followed inside the root, as a chroot would: an absolute link means a path in
   * the root, a relative one cannot climb above it. Never leads out to this machine's files. On '/' the same as real().
   */
  resolve(guestPath: string): Promise<string>;
}

export function rootPaths(root: string): RootPaths {
  let rootReal: Promise<string> | undefined;
  const top = () => (rootReal ??= fs.realpath(root));
  const real = (guestPath: string) => mapUnderRoot(root, guestPath);

  /** The guest path a guest path names once its symlinks are followed inside the root. */
  async function follow(guestPath: string, links: { count: number }): Promise<string> {
    let current = '';
    for (const part of guestPath.split('/').filter(Boolean)) {
      const next = `${current}/${part}`;
      const link = await fs.readlink(path.join(root, next)).catch(() => undefined);
      if (link === undefined) {
        current = next;
        continue;
      }
      if (++links.count > MAX_LINKS) throw Object.assign(new Error(`too many levels of symbolic links at ${guestPath}`), { code: 'ELOOP' });
      // posix normalize clamps ".." at "/", as the root directory of a chroot does
      const joined = path.posix.normalize(link.startsWith('/') ? link : `${current || '/'}/${link}`);
      current = await follow(joined, links);
      if (current === '/') current = '';
    }
    return current || '/';
  }

  /** The real path with every symlink followed inside the root. */
  async function resolve(guestPath: string): Promise<string> {
    const target = real(guestPath);
    if (root === '/') return target;
    const inside = await top();
    const resolved = await fs.realpath(target).catch(() => undefined);
    if (resolved && isWithin(inside, resolved)) return resolved;
    return path.join(root, await follow(guestPath, { count: 0 }));
  }

  return {
    root,
    real,
    resolve,
  };
}

/** Whether a real path is the directory top or below it. */
export function isWithin(top: string, p: string): boolean {
  return p === top || p.startsWith(top.endsWith('/') ? top : top + '/');
}
