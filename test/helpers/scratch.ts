// Scratch roots for tests: a temp directory per test, removed afterwards, and a byte-for-byte snapshot of a tree.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { ExecutionContext } from 'ava';
import { execa } from 'execa';
import { localHost } from '../../engine/host-local.ts';
import type { Host } from '../../engine/host.ts';
import type { Declared } from '../../engine/resource.ts';
import { runResources, type RunResult } from '../../engine/runner.ts';

export const PROJECT = path.resolve(import.meta.dirname, '../..');
export const BIN = path.join(PROJECT, 'bin/meshvm.js');

export async function scratchRoot(t: ExecutionContext, prefix = 'meshvm-test-'): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes files (guest paths) under a root; parents created. */
export async function seed(root: string, files: Record<string, string>): Promise<void> {
  for (const [file, content] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(root, file)), { recursive: true });
    await fs.writeFile(path.join(root, file), content);
  }
}

export async function converge(host: Host, declared: readonly Declared[], mode: 'converge' | 'plan' = 'converge'): Promise<RunResult> {
  return runResources(declared, { host, mode });
}

export const changedRefs = (result: RunResult) => result.resources.filter((r) => r.status === 'changed' || r.status === 'would-change').map((r) => r.ref);

/**
 * The contract every resource meets: changes on the first converge, none on the second, nothing pending in plan then.
 * `where` is a scratch root, or a function making a fresh host per run (e.g. inside a network namespace).
 */
export async function convergesOnce(t: ExecutionContext, where: string | (() => Host), declare: () => Declared[]): Promise<RunResult> {
  const host = typeof where === 'string' ? () => localHost({ root: where }) : where;
  const errors = (result: RunResult) =>
    result.resources
      .map((r) => r.error)
      .filter(Boolean)
      .join('\n');
  const first = await converge(host(), declare());
  t.false(first.failed, errors(first));
  t.true(changedRefs(first).length > 0, 'the first converge changes something');
  const second = await converge(host(), declare());
  t.false(second.failed, errors(second));
  t.deepEqual(changedRefs(second), [], 'the second converge changes nothing');
  const plan = await converge(host(), declare(), 'plan');
  t.deepEqual(changedRefs(plan), [], 'plan after converge has nothing to do');
  return first;
}

export interface Snapshot {
  [path: string]: string;
}

/** The run lock every converge takes before it plans (and the /run it may create): runtime state, not something a run writes. */
const RUN_LOCK = new Set(['run/', 'run/meshvm.lock']);

/** Every entry under a root but the run lock: type, mode, owner, and a hash of the content. */
/** meshvm's record of its runs: a failed run after a successful one rewrites it (its report says failed), nothing else. */
export const RUN_RECORDS = ['var/lib/meshvm/last-run.json', 'var/lib/meshvm/status.json'] as const;

/** The tree as a snapshot, without meshvm's record of its runs: what "nothing written on the machine" compares. */
export async function machineSnapshot(root: string): Promise<Snapshot> {
  const out = await snapshot(root);
  for (const record of RUN_RECORDS) delete out[record];
  return out;
}

export async function snapshot(root: string): Promise<Snapshot> {
  const out: Snapshot = {};
  async function walk(dir: string) {
    for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      const st = await fs.lstat(full);
      const rel = path.relative(root, full);
      if (RUN_LOCK.has(rel + (entry.isDirectory() ? '/' : ''))) {
        if (entry.isDirectory()) await walk(full);
        continue;
      }
      let what = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      if (entry.isFile())
        what +=
          ' ' +
          createHash('sha256')
            .update(await fs.readFile(full))
            .digest('hex');
      if (entry.isSymbolicLink()) what += ' -> ' + (await fs.readlink(full));
      out[rel + (entry.isDirectory() ? '/' : '')] = what;
      if (entry.isDirectory()) await walk(full);
    }
  }
  await walk(root);
  return out;
}

export interface CliResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Runs the real meshvm command (with this Node) and returns what it printed. */
export async function meshvm(args: readonly string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  const result = await execa(process.execPath, [BIN, ...args], {
    cwd: options.cwd ?? PROJECT,
    env: { NO_COLOR: '1', ...options.env },
    reject: false,
    timeout: 120_000,
  });
  return { stdout: String(result.stdout), stderr: String(result.stderr), exitCode: result.exitCode ?? -1 };
}

export function writeRunlist(dir: string, name: string, yaml: string): Promise<string> {
  const file = path.join(dir, name);
  return fs.writeFile(file, yaml).then(() => file);
}
