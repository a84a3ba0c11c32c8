// Commands confined to a root: the program looked up inside it, then run by `unshare --root`, as the machine being built would run it.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { RootPaths } from './root-paths.ts';
import { failure, type SafeRoot, safeRoot, UnsafePathError, untrusted } from './safe-path.ts';

/** How many symbolic links a program's path may pass through as its last component (the kernel's limit). */
const MAX_LINKS = 40;

/** The PATH a confined command gets and its program is looked up in. */
export const ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A command meant to run inside the root names a program the root does not have. */
export class NotInRootError extends Error {
  readonly program: string;
  readonly root: string;
  /** What is missing ("the root has no sh ..."), for callers that phrase their own advice. */
  readonly why: string;
  constructor(argv: readonly string[], root: string, why: string) {
    super(
      `the command \`${shown(argv)}\` runs inside the root ${root} (confined, as the machine being built would run it), ` +
        `but ${why}; set onHost: true in the spec to run it on this machine instead`,
    );
    this.name = 'NotInRootError';
    this.program = argv[0] ?? '';
    this.root = root;
    this.why = why;
  }
}

/**
 * The argv that runs argv confined to the root, its working directory cwd (a guest path, default '/').
 * Throws NotInRootError, running nothing, when the root has no such program. The working directory and the program
 * are found by the safe walk (safe-path.ts), as reads are: a link on the way in a directory an account can change is
 * refused naming the path, never followed to decide what runs.
 */
export async function confinedArgv(paths: RootPaths, argv: readonly string[], cwd = '/'): Promise<string[]> {
  const program = argv[0]!;
  const safe = safeRoot(paths.root);
  const dir = await safe.findDir(cwd);
  if (!dir) {
    throw new Error(`cannot run \`${shown(argv)}\` inside the root ${paths.root}: its working directory ${cwd} does not exist there`);
  }
  await dir.close();
  if (program.includes('/')) {
    const guest = path.posix.resolve(cwd, program);
    const found = await executable(safe, guest);
    if (found !== 'yes')
      throw new NotInRootError(argv, paths.root, found === 'missing' ? `the root has no ${guest}` : `${guest} in the root is not an executable file`);
  } else if (!(await lookUp(safe, program))) {
    throw new NotInRootError(argv, paths.root, `the root has no ${program} (looked in ${ROOT_PATH})`);
  }
  // "--": a program whose name starts with "-" is not read as an option of unshare
  return ['unshare', `--root=${paths.root}`, `--wd=${cwd}`, '--', ...argv];
}

/** The guest path of a program in the root's PATH, as execvp inside it would find it. */
export async function lookUp(safe: SafeRoot, program: string): Promise<string | undefined> {
  for (const dir of ROOT_PATH.split(':')) {
    const guest = `${dir}/${program}`;
    if ((await executable(safe, guest)) === 'yes') return guest;
  }
  return undefined;
}

/** Whether a guest path is an executable file: its last link followed inside the root, only where root alone can change it. */
async function executable(safe: SafeRoot, guest: string, links = 0): Promise<'yes' | 'missing' | 'not executable'> {
  const found = await safe.findParent(guest);
  if (!found) return 'missing';
  const { dir, name } = found;
  let target: string;
  try {
    const st = await fs
      .lstat(dir.at(name))
      .catch((error: NodeJS.ErrnoException) =>
        error.code === 'ENOENT' || error.code === 'ENOTDIR' ? undefined : Promise.reject(failure(error, 'look at', guest, dir)),
      );
    if (!st) return 'missing';
    if (!st.isSymbolicLink()) return st.isFile() && (st.mode & 0o111) !== 0 ? 'yes' : 'not executable';
    const link = await fs.readlink(dir.at(name));
    if (!dir.trusted) {
      throw new UnsafePathError(
        `refusing ${guest} (under the root ${safe.root}): it is a link (to ${link}) in ${dir.guest}, ${untrusted(dir.stat)}; ` +
          'meshvm does not follow links an unprivileged account controls (an unsafe path transition)',
      );
    }
    if (links >= MAX_LINKS) throw Object.assign(new Error(`too many levels of symbolic links at ${guest}`), { code: 'ELOOP' });
    // posix normalize clamps ".." at "/", as the root directory of a chroot does
    target = path.posix.normalize(link.startsWith('/') ? link : `${dir.guest}/${link}`);
  } finally {
    await dir.close();
  }
  return executable(safe, target, links + 1);
}

/** A command as it reads in a message: its words, long ones cut. */
function shown(argv: readonly string[]): string {
  const text = argv.join(' ');
  return text.length > 120 ? `${text.slice(0, 119)}…` : text;
}
