// Commands: argv arrays run on this machine or confined to the root, optionally in a netns; an allow-listed environment, LC_ALL=C, a timeout, CommandError.
import { spawn, type ChildProcess } from 'node:child_process';
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

/** The most a command may print on stdout or on stderr before it is stopped (as execa's default maxBuffer). */
const MAX_OUTPUT = 100 * 1024 * 1024;
/** After a timeout's SIGTERM, how long a command has before SIGKILL (as execa's forceKillAfterDelay). */
const FORCE_KILL_AFTER_MS = 5_000;

/** Commands still running: stopped if meshvm exits first (as execa's `cleanup` does), so none outlives the run. */
const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of running) c.kill('SIGTERM');
    });
  }
  running.add(child);
}

interface Spawned {
  stdout: string;
  stderr: string;
  /** undefined when the command could not be started, or was stopped (signal, timeout, too much output): see `failure`. */
  exitCode: number | undefined;
  failure?: string;
}

/**
 * One command run directly with node:child_process (no shell): `input` on its stdin, its output collected as UTF-8 text.
 * (execa did this before; loading it cost more than a no-op run's whole command handling.)
 */
function spawnCommand(
  file: string,
  args: readonly string[],
  opts: { input: string; env: Record<string, string>; cwd: string | undefined; timeoutMs: number },
): Promise<Spawned> {
  const shown = [file, ...args].join(' ');
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(file, args, { env: opts.env, ...(opts.cwd !== undefined && { cwd: opts.cwd }), stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (error) {
      resolve({ stdout: '', stderr: '', exitCode: undefined, failure: error instanceof Error ? error.message : String(error) });
      return;
    }
    track(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    let failure: string | undefined;
    let forceKill: NodeJS.Timeout | undefined;
    const stop = (why: string) => {
      failure ??= why;
      child.kill('SIGTERM');
      forceKill ??= setTimeout(() => child.kill('SIGKILL'), FORCE_KILL_AFTER_MS);
    };
    const timer = setTimeout(() => stop(`Command timed out after ${opts.timeoutMs} milliseconds: ${shown}`), opts.timeoutMs);
    child.stdout!.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > MAX_OUTPUT) stop(`Command's stdout was larger than ${MAX_OUTPUT} bytes: ${shown}`);
      else out.push(chunk);
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      errBytes += chunk.length;
      if (errBytes > MAX_OUTPUT) stop(`Command's stderr was larger than ${MAX_OUTPUT} bytes: ${shown}`);
      else err.push(chunk);
    });
    // a command that exits without reading its input: the broken pipe is not the command's failure
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.input);
    let spawnError: Error | undefined;
    child.on('error', (error) => {
      spawnError ??= error;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (forceKill) clearTimeout(forceKill);
      running.delete(child);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (spawnError) failure ??= spawnError.message;
      else if (signal) failure ??= `Command was killed with ${signal}: ${shown}`;
      resolve({ stdout, stderr, exitCode: failure === undefined ? (code ?? 1) : undefined, ...(failure !== undefined && { failure }) });
    });
  });
}

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
  const [file, ...args] = full as [string, ...string[]];
  const result = await spawnCommand(file, args, {
    input: opts.input ?? '',
    env: childEnvironment({ ...opts.env, ...(confined && { PATH: ROOT_PATH }) }),
    cwd,
    timeoutMs: opts.timeoutMs ?? 300_000,
  });
  if (result.exitCode === undefined) throw new CommandError(full, undefined, result.failure ?? 'failed');
  const out = { stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode };
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
