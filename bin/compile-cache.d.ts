// Types of compile-cache.js.
/** Where the compile cache goes: MESHVM_COMPILE_CACHE ("off": nowhere), else /var/cache/meshvm for root, ~/.cache for others. */
export function compileCacheDir(env: NodeJS.ProcessEnv, uid: number | undefined): string | undefined;
/** Turns V8's compile cache on where only this user and root can write; returns the directory used, if any. */
export function enableSafeCompileCache(env?: NodeJS.ProcessEnv): string | undefined;
