// The unprivileged attacker of the race tests: a program swapping two names with renameat2(RENAME_EXCHANGE), run as another uid by setpriv.
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa, execaSync, type ResultPromise } from 'execa';
import { PROJECT } from './scratch.ts';

/** The attacker's uid and gid: no account on a Debian machine has them (checked by raceUnavailable). */
export const ATTACKER_ID = 4242;
const SOURCES = path.join(PROJECT, 'test/fixtures/attacker');

const found = (argv: string[]) => execaSync(argv[0]!, argv.slice(1), { reject: false }).exitCode === 0;
const GCC = found(['gcc', '--version']);

/** Why the race cannot be run here (the test is then counted as skipped), or undefined. */
export function raceUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'it needs root, to run the attacker as another uid';
  if (!found(['setpriv', '--version'])) return 'no setpriv (util-linux) to drop to an unprivileged uid';
  if (found(['getent', 'passwd', String(ATTACKER_ID)])) return `uid ${ATTACKER_ID} is an account here; the attacker needs an unused one`;
  if (!GCC && !found(['python3', '-c', 'import ctypes'])) return 'neither gcc nor python3 (ctypes) to build the attacker';
  return undefined;
}

/** The attacker's argv, built in dir (which the attacker uid must be able to read): swap.c compiled by gcc, else swap.py. */
export async function buildSwapper(dir: string): Promise<{ argv: string[]; how: string }> {
  await fs.chmod(dir, 0o755);
  if (GCC) {
    const out = path.join(dir, 'swap');
    await execa('gcc', ['-O2', '-o', out, path.join(SOURCES, 'swap.c')]);
    return { argv: [out], how: 'swap.c built by gcc' };
  }
  const script = path.join(dir, 'swap.py');
  await fs.copyFile(path.join(SOURCES, 'swap.py'), script);
  await fs.chmod(script, 0o644);
  return { argv: ['python3', script], how: 'swap.py (python3 ctypes)' };
}

/** Starts the attacker as uid/gid ATTACKER_ID with no supplementary groups; it runs until killed. */
export function startAttacker(argv: string[], args: string[]): ResultPromise {
  const id = String(ATTACKER_ID);
  return execa('setpriv', ['--reuid', id, '--regid', id, '--clear-groups', '--', ...argv, ...args], { reject: false });
}
