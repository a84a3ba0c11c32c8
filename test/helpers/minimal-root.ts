// Minimal roots for confinement tests: a scratch root holding just some programs and their libraries, and canaries outside it.
import type { ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { scratchRoot } from './scratch.ts';

export const random = () => randomBytes(6).toString('hex');
export const exists = (p: string) =>
  fs.lstat(p).then(
    () => true,
    () => false,
  );

/** A path on this machine that must not appear: checked absent first, removed afterwards whatever happened. */
export async function canaryOutside(t: ExecutionContext, dir = '/tmp'): Promise<string> {
  const canary = path.join(dir, `canary-${random()}`);
  t.false(await exists(canary), `${canary} exists before the test`);
  t.teardown(() => fs.rm(canary, { force: true, recursive: true }));
  return canary;
}

const libraries = new Map<string, Promise<string[]>>();
/** The shared libraries and loader a program needs, as ldd lists them. */
function librariesOf(program: string): Promise<string[]> {
  let found = libraries.get(program);
  if (!found) {
    found = execa('ldd', [program]).then(({ stdout }) => [...String(stdout).matchAll(/(?:=> )?(\/\S+) \(0x/g)].map((m) => m[1]!));
    libraries.set(program, found);
  }
  return found;
}

/** A scratch root holding just these programs (copied to the same paths) and their libraries, plus /tmp and /work. */
export async function minimalRoot(t: ExecutionContext, programs: string[]): Promise<string> {
  const root = await scratchRoot(t, 'meshvm-confine-');
  for (const program of programs) {
    for (const file of [program, ...(await librariesOf(program))]) {
      const to = path.join(root, file);
      await fs.mkdir(path.dirname(to), { recursive: true });
      await fs.copyFile(file, to); // follows /bin/sh -> dash: the root gets the program itself
      await fs.chmod(to, 0o755);
    }
  }
  for (const dir of ['tmp', 'work']) await fs.mkdir(path.join(root, dir), { recursive: true });
  return root;
}
