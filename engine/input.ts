// The files meshvm takes its input from as root (runlists, node files, recipe modules): capped, UTF-8, changeable by root only.
import { isUtf8 } from 'node:buffer';
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { InputError } from './errors.ts';

/** A runlist or node file larger than this is refused before it is parsed (a 20 MB scalar would cost ~1 GB as a YAML tree). */
export const MAX_INPUT_BYTES = 4 * 1024 * 1024;

/**
 * Reads a runlist or node file: refused when it is not a regular file, larger than MAX_INPUT_BYTES, not UTF-8, or (when
 * meshvm runs as root) changeable by another account. Undefined when `optional` and the file does not exist.
 */
export async function readInputFile(
  file: string,
  shown: string,
  what: string,
  options: { optional?: boolean; cannotOpen?: (error: Error) => InputError } = {},
): Promise<string | undefined> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && options.optional) return undefined;
    if (options.cannotOpen) throw options.cannotOpen(error as Error);
    throw new InputError(shown, code === 'ENOENT' ? `no such ${what} file` : `cannot read the ${what}: ${(error as Error).message}`);
  }
  try {
    const stat = await handle.stat();
    if (stat.isDirectory()) throw new InputError(shown, `is a directory, not a ${what} file`);
    if (!stat.isFile()) throw new InputError(shown, `is not a regular file; a ${what} must be one`);
    if (stat.size > MAX_INPUT_BYTES) throw tooLarge(shown, what, stat.size);
    await checkTrusted(file, shown, what, stat);
    const bytes = await handle.readFile();
    if (bytes.length > MAX_INPUT_BYTES) throw tooLarge(shown, what, bytes.length);
    return decodeUtf8(bytes, shown, what);
  } finally {
    await handle.close();
  }
}

function tooLarge(shown: string, what: string, size: number): InputError {
  return new InputError(shown, `is ${size} bytes; a ${what} may be at most ${MAX_INPUT_BYTES / 1024 / 1024} MiB`);
}

/** UTF-8 text, or an error naming the first line that is not (a Latin-1 file would otherwise be read with U+FFFD in it). */
function decodeUtf8(bytes: Buffer, shown: string, what: string): string {
  if (isUtf8(bytes)) return bytes.toString('utf8');
  let line = 1;
  for (let start = 0; start < bytes.length; line++) {
    const end = bytes.indexOf(0x0a, start);
    const stop = end === -1 ? bytes.length : end;
    if (!isUtf8(bytes.subarray(start, stop))) break;
    start = stop + 1;
  }
  throw new InputError(`${shown}:${line}`, `the ${what} is not UTF-8 text (save it as UTF-8)`);
}

/**
 * As sshd's StrictModes: when meshvm runs as root, the file it takes a runlist, node file or recipe module from, and
 * every directory above it, must be changeable by root only (owned by root; not group- or world-writable, a sticky
 * directory such as /tmp excepted for its world bit). Otherwise an account that can write it can run code as root (a
 * node file sets the timer's ExecStart; a recipe module is code). Links are followed to the real file first.
 */
export async function checkTrusted(file: string, shown: string, what: string, stat?: Stats): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const real = await fs.realpath(file);
  const own = stat ?? (await fs.stat(real));
  const problem = await untrusted(own, false);
  if (problem) throw refuse(shown, `the ${what} ${real === path.resolve(file) ? '' : `(really ${real}) `}${problem}`);
  for (let dir = path.dirname(real); ; dir = path.dirname(dir)) {
    const why = await untrusted(await fs.stat(dir), true);
    if (why) throw refuse(shown, `the ${what}'s directory ${dir} ${why}`);
    if (dir === path.dirname(dir)) break;
  }
}

function refuse(shown: string, problem: string): InputError {
  return new InputError(shown, `${problem}; meshvm runs as root and takes no input another account can change (chown root, chmod go-w)`);
}

/** Why another account could change this file or directory, or undefined when only root can. */
async function untrusted(stat: Stats, directory: boolean): Promise<string | undefined> {
  const mode = `mode ${(stat.mode & 0o7777).toString(8).padStart(4, '0')}`;
  if (stat.uid !== 0) return `is owned by ${await named('/etc/passwd', 'uid', stat.uid)}, ${mode}`;
  if (stat.mode & 0o002 && !(directory && stat.mode & 0o1000)) return `is writable by every account (${mode})`;
  if (stat.mode & 0o020 && stat.gid !== 0) return `is writable by group ${await named('/etc/group', 'gid', stat.gid)}, ${mode}`;
  return undefined;
}

/** "nobody (uid 65534)": the id's name in this machine's /etc/passwd or /etc/group (whose accounts can write here). */
async function named(file: string, kind: 'uid' | 'gid', id: number): Promise<string> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  const name = text
    .split('\n')
    .find((line) => line.split(':')[2] === String(id))
    ?.split(':')[0];
  return name ? `${name} (${kind} ${id})` : `${kind} ${id}`;
}
