// Whether a path is one only root (or this user) controls: for what meshvm, as root, reads and then trusts or runs.
// Plain JavaScript (types in owned-path.d.ts), for bin/compile-cache.js.
import fs from 'node:fs';
import path from 'node:path';

/**
 * Why `target` could be changed by another user, or undefined when it cannot. It and every directory above it must be
 * owned by root or `uid`; none writable by others, except a sticky directory above it (as /tmp: no one else can rename
 * or remove what root made there, and the next one down is checked in turn); `target` itself not at all. No symlinks:
 * `target` is a real directory or regular file (resolve a link first, and check where the link is too).
 */
export function notOwned(target, uid) {
  const parts = path.resolve(target).split('/').filter(Boolean);
  for (let i = 0; i <= parts.length; i++) {
    const at = `/${parts.slice(0, i).join('/')}`;
    const st = fs.lstatSync(at, { throwIfNoEntry: false });
    if (!st) return `${at} does not exist`;
    const last = i === parts.length;
    if (!st.isDirectory() && !(last && st.isFile())) return `${at} is not a ${last ? 'directory or regular file' : 'directory'}`;
    if (st.uid !== 0 && st.uid !== uid) return `${at} belongs to uid ${st.uid}`;
    const sticky = (st.mode & 0o1000) !== 0 && !last;
    if (st.mode & 0o022 && !sticky) return `${at} is writable by others (mode ${(st.mode & 0o7777).toString(8)})`;
  }
  return undefined;
}

/**
 * notOwned for a file that may be reached through symlinks: every link on the way, hop by hop, must sit in a directory
 * only root (or `uid`) controls, and so must the file it ends at; otherwise another user could re-point a link in the
 * middle after this check.
 */
export function fileNotOwned(file, uid) {
  let at = path.resolve(file);
  for (let hops = 0; hops <= 40; hops++) {
    const where = notOwned(path.dirname(at), uid);
    if (where) return where;
    let st;
    try {
      st = fs.lstatSync(at);
    } catch (error) {
      return `${at}: ${error instanceof Error ? error.message : String(error)}`;
    }
    if (!st.isSymbolicLink()) return notOwned(at, uid);
    at = path.resolve(path.dirname(at), fs.readlinkSync(at));
  }
  return `${file}: too many levels of symbolic links`;
}
