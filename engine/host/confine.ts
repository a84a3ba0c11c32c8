// Commands confined to a root: the program looked up inside it, then run by `unshare --root`, as the machine being built would run it.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { RootPaths } from './root-paths.ts';

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
 * Throws NotInRootError, running nothing, when the root has no such program.
 */
export async function confinedArgv(paths: RootPaths, argv: readonly string[], cwd = '/'): Promise<string[]> {
  const program = argv[0]!;
  const dir = await paths.resolve(cwd);
  if (!(await fs.stat(dir).catch(() => undefined))?.isDirectory()) {
    throw new Error(`cannot run \`${shown(argv)}\` inside the root ${paths.root}: its working directory ${cwd} does not exist there`);
  }
  if (program.includes('/')) {
    const guest = path.posix.resolve(cwd, program);
    const found = await executable(paths, guest);
    if (found !== 'yes')
      throw new NotInRootError(argv, paths.root, found === 'missing' ? `the root has no ${guest}` : `${guest} in the root is not an executable file`);
  } else if (!(await lookUp(paths, program))) {
    throw new NotInRootError(argv, paths.root, `the root has no ${program} (looked in ${ROOT_PATH})`);
  }
  // "--": a program whose name starts with "-" is not read as an option of unshare
  return ['unshare', `--root=${paths.root}`, `--wd=${cwd}`, '--', ...argv];
}

/** The guest path of a program in the root's PATH, as execvp inside it would find it. */
export async function lookUp(paths: RootPaths, program: string): Promise<string | undefined> {
  for (const dir of ROOT_PATH.split(':')) {
    const guest = `${dir}/${program}`;
    if ((await executable(paths, guest)) === 'yes') return guest;
  }
  return undefined;
}

async function executable(paths: RootPaths, guest: string): Promise<'yes' | 'missing' | 'not executable'> {
  const st = await fs.stat(await paths.resolve(guest)).catch(() => undefined);
  if (!st) return 'missing';
  return st.isFile() && (st.mode & 0o111) !== 0 ? 'yes' : 'not executable';
}

/** A command as it reads in a message: its words, long ones cut. */
function shown(argv: readonly string[]): string {
  const text = argv.join(' ');
  return text.length > 120 ? `${text.slice(0, 119)}…` : text;
}
