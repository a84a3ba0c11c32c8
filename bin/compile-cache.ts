// V8's compile cache for meshvm's code and the recipe modules it loads, in a directory no other user can write to.
import fs from 'node:fs';
import { enableCompileCache } from 'node:module';
import os from 'node:os';
import path from 'node:path';

/**
 * Where the cache goes: MESHVM_COMPILE_CACHE (a directory, or "off"), else /var/cache/meshvm/compile-cache for root and
 * ~/.cache/meshvm/compile-cache for anyone else. Node's own default (os.tmpdir()/node-compile-cache) is not used: code
 * read from the cache is run as it is, and in /tmp any user can create that directory first and fill it.
 */
export function compileCacheDir(env: NodeJS.ProcessEnv, uid: number | undefined): string | undefined {
  const given = env.MESHVM_COMPILE_CACHE;
  if (given === 'off') return undefined;
  if (given) return path.resolve(given);
  if (uid === undefined) return undefined;
  return uid === 0 ? '/var/cache/meshvm/compile-cache' : path.join(os.homedir(), '.cache/meshvm/compile-cache');
}

/**
 * Why `dir` must not hold code this user runs, or undefined. It and every directory above it must be real directories
 * (no symlinks) owned by root or this user; none writable by others, except a sticky one above (as /tmp: no one else can
 * rename or remove what this user made there, and the next directory down is checked in turn); `dir` itself not at all.
 */
export function unsafeCacheDir(dir: string, uid: number): string | undefined {
  const parts = path.resolve(dir).split('/').filter(Boolean);
  for (let i = 0; i <= parts.length; i++) {
    const at = `/${parts.slice(0, i).join('/')}`;
    const st = fs.lstatSync(at);
    if (!st.isDirectory()) return `${at} is not a directory`;
    if (st.uid !== 0 && st.uid !== uid) return `${at} belongs to uid ${st.uid}`;
    const sticky = (st.mode & 0o1000) !== 0 && i < parts.length;
    if (st.mode & 0o022 && !sticky) return `${at} is writable by others (mode ${(st.mode & 0o7777).toString(8)})`;
  }
  return undefined;
}

/**
 * Turns the cache on where it is safe (the directory made 0700 if missing); anywhere else, or on any error, meshvm runs
 * without it: slower to start, nothing else changes. Returns the directory used.
 */
export function enableSafeCompileCache(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const uid = process.getuid?.();
  const dir = compileCacheDir(env, uid);
  if (dir === undefined || uid === undefined) return undefined;
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (unsafeCacheDir(dir, uid) !== undefined) return undefined;
    enableCompileCache?.(dir);
    return dir;
  } catch {
    return undefined;
  }
}
