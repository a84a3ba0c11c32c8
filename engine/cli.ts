// The command line: meshvm converge|plan RUNLIST, flags, exit codes, the run lock, signals and the report.
import fs from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pkg from '../package.json' with { type: 'json' };
import { InputError, errorMessage } from './errors.ts';
import { localHost } from './host-local.ts';
import { acquireLock, type RunLock } from './lock.ts';
import { humanListener } from './output.ts';
import { checkRequirements, planRunlist } from './plan.ts';
import { checkComposites } from './composite.ts';
import type { Recipe } from './recipe.ts';
import type { Check } from './check.ts';
import { runChecks } from './verify.ts';
import { buildReport, reportJson } from './report.ts';
import { ensureStateDir, runResources } from './runner.ts';
import { loadRunlist } from './runlist.ts';
import { secrets } from './secrets.ts';
import { LAST_RUN_FILE, LOCK_FILE, NODE_FILE } from './state-paths.ts';

export { LAST_RUN_FILE, NODE_FILE };

const USAGE = `meshvm ${pkg.version}: converge this machine to a runlist (Istio mesh expansion for VMs)

Usage:
  meshvm converge RUNLIST [options]   make the machine match the runlist
  meshvm plan RUNLIST [options]       show what converge would change; change nothing
  meshvm verify RUNLIST [options]     check the machine works as the runlist means it to (names, ports, certs, services)
  meshvm runlist [NAME]               print a built-in runlist (to start from, or for /etc/meshvm/runlist.yaml); list them
  meshvm --help | --version

Options:
  --root DIR            map every path under DIR (default /)
  --node FILE           this machine's attributes (default /etc/meshvm/node.yaml under the root, if present)
  --set KEY=VALUE       set an attribute (repeatable; KEY may start with a recipe name: sidecar.inboundPorts=[8080])
  --json                print the JSON report on stdout (progress goes to stderr)
  --verbose             also list resources that are already right
  --lock-wait SECONDS   how long to wait for another run's lock (default 600)
  --no-color            plain output even on a terminal
  --detailed-exitcode   (plan) exit 0 when nothing would change, 2 when something would
  --resolver IP[:PORT]  (verify) ask this DNS server instead of the system resolver

Attributes: recipe defaults < runlist < node file < --set.
Exit codes: 0 success, 1 error; plan --detailed-exitcode: 0 nothing to do, 2 changes pending, 1 error;
verify: 0 every check passed, 1 a check failed.
The report of every converge is written to /var/lib/meshvm/last-run.json (under --root).`;

export interface CliIO {
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  env: NodeJS.ProcessEnv;
}

export interface CliOptions {
  builtins: ReadonlyMap<string, Recipe>;
  /** The built-in runlists by name (runlists/*.yaml), for `meshvm runlist`. */
  runlists?: () => Promise<ReadonlyMap<string, string>>;
}

export async function main(argv: readonly string[], options: CliOptions, io: CliIO = process): Promise<number> {
  let parsed: ReturnType<typeof parseFlags>;
  try {
    parsed = parseFlags(argv);
  } catch (error) {
    io.stderr.write(`meshvm: ${errorMessage(error).replace(/^TypeError \[[A-Z_]+\]: /, '')}\nRun meshvm --help for usage.\n`);
    return 1;
  }
  const { values, positionals } = parsed;
  if (values.help) return (io.stdout.write(USAGE + '\n'), 0);
  if (values.version) return (io.stdout.write(`${pkg.version}\n`), 0);
  const [command, runlistFile, ...extra] = positionals;
  if (command === 'runlist') return printRunlist(runlistFile, options, io);
  if (command !== 'converge' && command !== 'plan' && command !== 'verify') {
    io.stderr.write(command ? `meshvm: unknown command "${command}" (converge, plan or verify)\n` : `${USAGE}\n`);
    return 1;
  }
  const mode = command === 'verify' ? 'plan' : command;
  const json = Boolean(values.json);
  const fail = (error: unknown) => {
    const message = secrets.redact(errorMessage(error));
    io.stderr.write(`meshvm: ${message}\n`);
    if (json) io.stdout.write(JSON.stringify({ outcome: 'failed', error: message }, null, 2) + '\n');
    return 1;
  };
  let lock: RunLock | undefined;
  // per-run services (the cluster connection, its Vault login): closed whatever happens, so a run's Vault token is revoked
  const services = new Map<string, unknown>();
  try {
    if (!runlistFile) throw new InputError(`meshvm ${command}`, 'missing the RUNLIST argument (a YAML file such as runlists/demo.yaml)');
    if (extra.length) throw new InputError(`meshvm ${command}`, `unexpected arguments: ${extra.join(' ')}`);
    if (values['detailed-exitcode'] && command !== 'plan') throw new InputError('--detailed-exitcode', 'only plan takes it');
    if (values.resolver && command !== 'verify') throw new InputError('--resolver', 'only verify takes it');
    const lockWait = values['lock-wait'] === undefined ? 600 : Number(values['lock-wait']);
    if (!Number.isFinite(lockWait) || lockWait < 0) throw new InputError(`--lock-wait ${values['lock-wait']}`, 'expected a number of seconds');
    const root = await checkRoot(values.root ?? '/', mode);
    const host = localHost({ root });

    const runlist = await loadRunlist(path.resolve(runlistFile), options.builtins, {
      nodeFile: values.node ? { path: path.resolve(values.node), required: true } : { path: host.realPath(NODE_FILE), required: false },
      sets: values.set ?? [],
    });

    const human = humanListener({
      stream: json ? io.stderr : io.stdout,
      color: !values['no-color'] && !io.env.NO_COLOR && Boolean((json ? io.stderr : io.stdout).isTTY),
      verbose: Boolean(values.verbose),
    });
    // the lock before planning: recipes read the machine (and mint tokens) while they declare, so a run that waited
    // must plan against what the run before it left, not against what was there when it started
    if (mode === 'converge') {
      lock = await acquireLock(host.realPath(LOCK_FILE), {
        waitSeconds: lockWait,
        command: `meshvm converge ${runlistFile}`,
        onWait: (holder) =>
          human({
            type: 'message',
            level: 'info',
            text: `waiting up to ${lockWait} s for the run lock${holder ? ` held by pid ${holder.pid} since ${holder.startedAt} (${holder.command})` : ''}`,
          }),
      });
    }
    const startedAt = new Date();
    const { declared, entries } = await planRunlist(runlist, {
      host,
      mode,
      service: <T>(key: string, create: () => T): T => {
        if (!services.has(key)) services.set(key, create());
        return services.get(key) as T;
      },
    });
    await checkRequirements(declared, host);
    await checkComposites(declared, host);
    if (command === 'verify') return printChecks(await runChecks(entries, host, { resolver: values.resolver }), io, json);

    let signalled = false;
    const onSignal = (signal: string) => {
      if (!signalled) human({ type: 'message', level: 'warn', text: `${signal}: finishing the resource in flight, then stopping` });
      signalled = true;
    };
    const onInt = () => onSignal('SIGINT');
    const onTerm = () => onSignal('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    let result: Awaited<ReturnType<typeof runResources>>;
    try {
      human({ type: 'start', mode, runlist: runlist.file, root: host.root, total: declared.length });
      result = await runResources(declared, { host, mode, listener: human, interrupted: () => signalled });
    } finally {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
    }
    await closeServices(services);

    const report = buildReport(result, { meshvm: pkg.version, mode, runlist: runlist.file, root: host.root, startedAt });
    human({ type: 'done', report });
    const text = reportJson(report);
    if (mode === 'converge') {
      await ensureStateDir(host);
      await host.writeFile(LAST_RUN_FILE, text, { mode: 0o644, backup: false });
    }
    if (json) io.stdout.write(text);
    if (report.outcome === 'failed' || report.outcome === 'interrupted') return 1;
    if (mode === 'plan' && values['detailed-exitcode']) return report.outcome === 'would-change' || result.notifications.length ? 2 : 0;
    return 0;
  } catch (error) {
    return fail(error);
  } finally {
    await closeServices(services);
    await lock?.release();
  }
}

/** The flags meshvm takes (node:util parseArgs, strict). */
function parseFlags(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      root: { type: 'string' },
      node: { type: 'string' },
      set: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      verbose: { type: 'boolean', short: 'v' },
      'lock-wait': { type: 'string' },
      'no-color': { type: 'boolean' },
      'detailed-exitcode': { type: 'boolean' },
      resolver: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'V' },
    },
  });
}

async function closeServices(services: Map<string, unknown>): Promise<void> {
  for (const service of services.values()) await (service as { close?: () => Promise<void> })?.close?.();
  services.clear();
}

async function printRunlist(name: string | undefined, options: CliOptions, io: CliIO): Promise<number> {
  const runlists = (await options.runlists?.()) ?? new Map<string, string>();
  if (!name) {
    io.stdout.write([...runlists.keys()].sort().join('\n') + '\n');
    return 0;
  }
  const text = runlists.get(name.replace(/\.yaml$/, ''));
  if (text === undefined) {
    io.stderr.write(`meshvm: no built-in runlist "${name}" (there are: ${[...runlists.keys()].sort().join(', ')})\n`);
    return 1;
  }
  io.stdout.write(text);
  return 0;
}

function printChecks(checks: readonly Check[], io: CliIO, json: boolean): number {
  const failed = checks.filter((c) => !c.ok).length;
  if (json) io.stdout.write(secrets.redact(JSON.stringify({ ok: failed === 0, failed, checks }, null, 2)) + '\n');
  else {
    for (const c of checks) {
      const word = c.skipped ? 'skipped' : c.ok ? 'ok     ' : 'FAILED ';
      io.stdout.write(secrets.redact(`${word} ${c.check}: ${c.detail}${c.fix && !c.ok ? `\n        fix: ${c.fix}` : ''}`) + '\n');
    }
    io.stdout.write(failed ? `${failed} of ${checks.length} checks failed\n` : `all ${checks.length} checks passed\n`);
  }
  return failed ? 1 : 0;
}

async function checkRoot(root: string, mode: 'plan' | 'converge'): Promise<string> {
  const resolved = path.resolve(root);
  const stat = await fs.stat(resolved).catch(() => undefined);
  if (!stat) throw new InputError(`--root ${root}`, 'no such directory');
  if (!stat.isDirectory()) throw new InputError(`--root ${root}`, 'is not a directory');
  if (mode === 'converge') {
    await fs.access(resolved, fsc.W_OK).catch((error) => {
      throw new InputError(`--root ${root}`, `is not writable (${(error as NodeJS.ErrnoException).code}); converge needs to write there`);
    });
  }
  return resolved;
}
