// Guest paths: absolute, normalised, never climbing out of the root.
import path from 'node:path';

/** Why a guest path is unacceptable, or undefined when it is fine. */
export function guestPathProblem(p: string): string | undefined {
  if (typeof p !== 'string' || p.length === 0) return 'must be a non-empty path';
  if (p.includes('\0')) return 'must not contain a NUL byte';
  if (!p.startsWith('/')) return `must be absolute (got "${p}")`;
  if (p.split('/').includes('..')) return `must not contain ".." (got "${p}")`;
  if (p !== '/' && (p.endsWith('/') || p.includes('//') || p.split('/').includes('.'))) {
    return `must be normalised (got "${p}", did you mean "${path.posix.normalize(p).replace(/\/$/, '')}"?)`;
  }
  return undefined;
}

export function mapUnderRoot(root: string, guestPath: string): string {
  const problem = guestPathProblem(guestPath);
  if (problem) throw new Error(`path ${problem}`);
  return root === '/' ? guestPath : path.join(root, guestPath);
}
