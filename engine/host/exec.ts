// Commands: argv arrays run on this machine or confined to the root, optionally in a netns; LC_ALL=C, a timeout, CommandError.
import fs from 'node:fs/promises';
import type { CommandOptions, CommandResult } from '../host.ts';
import { CommandError } from '../errors.ts';
import { confinedArgv, ROOT_PATH } from './confine.ts';
import type { RootPaths } from './root-paths.ts';

export interface CommandPlace {
  paths: RootPaths;
  netns: string | undefined;
  /** Receives the full argv of every command run (for verbose output). */
  onCommand: ((argv: readonly string[]) => void) | undefined;
}

let execaModule: Promise<typeof import('execa')> | undefined;
const loadExeca = () => (execaModule ??= import('execa'));

export async function runCommand(place: CommandPlace, argv: readonly string[], opts: CommandOptions = {}): Promise<CommandResult> {
  const { paths, netns } = place;
  if (argv.length === 0 || !argv[0]) throw new Error('cannot run an empty command: the argv needs a program');
  const confined = opts.in === 'root' && paths.root !== '/';
  let inner: string[];
  let cwd: string | undefined;
  if (confined) {
    inner = await confinedArgv(paths, argv, opts.cwd);
  } else {
    inner = [...argv];
    if (opts.cwd !== undefined) cwd = await workingDirectory(paths, argv, opts.cwd);
  }
  const full = netns ? ['ip', 'netns', 'exec', netns, ...inner] : inner;
  place.onCommand?.(full);
  const { execa } = await loadExeca();
  const [file, ...args] = full as [string, ...string[]];
  const result = await execa(file, args, {
    input: opts.input ?? '',
    env: { LC_ALL: 'C', ...opts.env, ...(confined && { PATH: ROOT_PATH }) },
    ...(cwd !== undefined && { cwd }),
    timeout: opts.timeoutMs ?? 300_000,
    reject: false,
    stripFinalNewline: false,
  });
  if (result.failed && result.exitCode === undefined) {
    throw new CommandError(full, undefined, result.originalMessage ?? result.shortMessage ?? 'failed');
  }
  const out = { stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? ''), exitCode: result.exitCode ?? 1 };
  if (out.exitCode !== 0 && !opts.allowFailure) throw new CommandError(full, out.exitCode, out.stderr, out.stdout);
  return out;
}

/** The real directory a command on this machine starts in: the guest path mapped under the root. */
async function workingDirectory(paths: RootPaths, argv: readonly string[], guest: string): Promise<string> {
  const dir = paths.real(guest);
  if (!(await fs.stat(dir).catch(() => undefined))?.isDirectory()) {
    const under = paths.root === '/' ? '' : ` (${dir} under the root ${paths.root})`;
    throw new Error(`cannot run \`${argv.join(' ')}\`: its working directory ${guest} does not exist${under}`);
  }
  return dir;
}
