// Commands: argv arrays run on this machine or confined to the root, optionally in a netns; an allow-listed environment, LC_ALL=C, a timeout, CommandError.
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

/**
 * What a command inherits from meshvm's own environment: the locale, time zone, home, temp dir, and the proxy settings apt
 * and curl read. Nothing else: a VAULT_TOKEN, AWS keys or NODE_OPTIONS of the caller never reach dpkg maintainer scripts,
 * dnsmasq or a verify command. What a command needs beyond that is given by its caller (`env`: apt's DEBIAN_FRONTEND, an
 * Execute's `env`).
 */
const INHERITED = new Set([
  'PATH',
  'HOME',
  'LANG',
  'LANGUAGE',
  'TZ',
  'TMPDIR',
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
]);

/** The environment of a child process: the allow-listed part of `from`, LC_ALL=C, then what the caller asks for. */
export function childEnvironment(extra: Record<string, string> = {}, from: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = { PATH: ROOT_PATH };
  for (const [name, value] of Object.entries(from)) {
    if (value !== undefined && (INHERITED.has(name) || name.startsWith('LC_'))) env[name] = value;
  }
  return { ...env, LC_ALL: 'C', ...extra };
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
    env: childEnvironment({ ...opts.env, ...(confined && { PATH: ROOT_PATH }) }),
    extendEnv: false,
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
