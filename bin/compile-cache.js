// V8's compile cache for meshvm's code and the recipe modules it loads, in a directory no other user can write to.
// Plain JavaScript (types in compile-cache.d.ts): bin/meshvm.js loads it before the cache is on, and a .ts module
// would make Node load its TypeScript stripper (~35 ms, ~18 MiB) on every run.
import fs from 'node:fs';
import { enableCompileCache } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { notOwned } from './owned-path.js';

/**
 * Where the cache goes: MESHVM_COMPILE_CACHE (a directory, or "off"), else /var/cache/meshvm/compile-cache for root and
 * ~/.cache/meshvm/compile-cache for anyone else. Node's own default (os.tmpdir()/node-compile-cache) is not used: code
 * read from the cache is run as it is, and in /tmp any user can create that directory first and fill it.
 */
export function compileCacheDir(env, uid) {
  const given = env.MESHVM_COMPILE_CACHE;
  if (given === 'off') return undefined;
  if (given) return path.resolve(given);
  if (uid === undefined) return undefined;
  return uid === 0 ? '/var/cache/meshvm/compile-cache' : path.join(os.homedir(), '.cache/meshvm/compile-cache');
}

/**
 * Turns the cache on where it is safe (made 0700 if missing; bin/owned-path.js says what is safe); anywhere else, or on any error,
 * meshvm runs without it: slower to start, nothing else changes. Returns the directory used.
 */
export function enableSafeCompileCache(env = process.env) {
  const uid = process.getuid?.();
  const dir = compileCacheDir(env, uid);
  if (dir === undefined || uid === undefined) return undefined;
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (notOwned(dir, uid) !== undefined) return undefined;
    enableCompileCache?.(dir);
    return dir;
  } catch {
    return undefined;
  }
}
