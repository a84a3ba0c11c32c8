// The command line: meshvm converge|plan|offboard RUNLIST, flags, exit codes, the run lock, signals and the report.
import fs from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pkg from '../package.json' with { type: 'json' };
import { InputError, errorMessage } from './errors.ts';
import type { Host } from './host.ts';
import { localHost } from './host-local.ts';
import { acquireLock, type RunLock } from './lock.ts';
import { humanListener, keepGoingWhenClosed } from './output.ts';
import { checkRequirements, planRunlist, type Plan } from './plan.ts';
import { offboardRunlist } from './offboard.ts';
import { checkComposites } from './composite.ts';
import { preflight } from './preflight.ts';
import type { PublishContext, RecipeContext } from './recipe.ts';
import type { Check } from './check.ts';
import { runChecks } from './verify.ts';
import { buildReport, reportJson, type Listener, type RunReport } from './report.ts';
import { runStatus, type RunStatus } from './run-status.ts';
import { apiCalls } from './api-calls.ts';
import { METRICS_FILE_NAME, textfileDir, writeMetrics } from './metrics.ts';
import type { Declared } from './resource.ts';
import { ensureStateDir, runResources, type RunResult } from './runner.ts';
import { builtinsOf, loadRunlist, type Builtins, type Runlist } from './runlist.ts';
import { SCHEMA_KINDS, isSchemaKind, schemaText } from './schema.ts';
import { secrets } from './secrets.ts';
import {
  FLEET_VIEW_FILE,
  INSTALLED_DEBS_DIR,
  INSTALLED_PACKAGES_DIR,
  SERVICES_DIR,
  LAST_RUN_FILE,
  LOCK_FILE,
  NODE_FILE,
  STATE_DIR,
  STATUS_FILE,
  WRITTEN_DIR,
} from './state-paths.ts';
import { Interrupted, Signals } from './signals.ts';

export { LAST_RUN_FILE, NODE_FILE };

const USAGE = `meshvm ${pkg.version}: converge this machine to a runlist (Istio mesh expansion for VMs)

Usage:
  meshvm converge RUNLIST [options]   make the machine match the runlist
  meshvm plan RUNLIST [options]       show what converge would change; change nothing
  meshvm offboard RUNLIST [options]   take the machine out of the mesh: undo what the runlist's recipes did, last first
  meshvm verify RUNLIST [options]     check the machine works as the runlist means it to (names, ports, certs, services)
  meshvm runlist [NAME]               print a built-in runlist (to start from, or for /etc/meshvm/runlist.yaml); list them
  meshvm schema runlist|node          print the JSON Schema of a runlist or a node file (for editors)
  meshvm help | --help | --version

Options:
  --root DIR            map every path under DIR (default /); converge creates a missing DIR, plan and verify refuse it
  --node FILE           this machine's attributes (default /etc/meshvm/node.yaml under the root, if present)
  --set KEY=VALUE       set an attribute (repeatable; KEY may start with a recipe name: sidecar.inboundPorts=[8080])
  --json                print the JSON report on stdout (progress goes to stderr)
  --verbose             also list resources that are already right
  --lock-wait SECONDS   how long to wait for another run's lock (default 600)
  --no-color            plain output even on a terminal
  --detailed-exitcode   (plan) exit 0 when nothing would change, 2 when something would
  --offboard            (plan) show what offboard would change
  --purge               (offboard, plan --offboard) also remove the sidecar package and the istio-proxy account
  --resolver IP[:PORT]  (verify) ask this DNS server instead of the system resolver
  --refresh             read every cluster input fresh, not the ones kept between runs (cluster.keepInputs); verify
                        always does
  --textfile-dir DIR    (converge) write meshvm.prom there for node_exporter's textfile collector (default: its
                        directory when it exists: /var/lib/prometheus/node-exporter, /var/lib/node_exporter/textfile_collector)

Attributes: recipe defaults < runlist < node file < --set.
Exit codes: 0 success, 1 error; plan --detailed-exitcode: 0 nothing to do, 2 changes pending, 1 error;
verify: 0 every check passed, 1 a check failed.
The report of every converge and offboard is written to /var/lib/meshvm/last-run.json (under --root).`;

/** Every command, for the unknown-command message. */
export const COMMANDS = ['converge', 'plan', 'offboard', 'verify', 'runlist', 'schema', 'help'] as const;

export interface CliIO {
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  env: NodeJS.ProcessEnv;
}

export interface CliOptions {
  /** The built-in recipes, or what loads them when a runlist names one (engine/runlist.ts). */
  builtins: Builtins;
  /** The built-in runlists by name (runlists/*.yaml), for `meshvm runlist`. */
  runlists?: () => Promise<ReadonlyMap<string, string>>;
}

export async function main(argv: readonly string[], options: CliOptions, io: CliIO = process): Promise<number> {
  // a closed stdout or stderr (`| head -1`, a dropped ssh session) must not stop a converge half-way
  keepGoingWhenClosed(io.stdout);
  keepGoingWhenClosed(io.stderr);
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
  if (command === 'help') return (io.stdout.write(USAGE + '\n'), 0);
  if (command === 'runlist') return printRunlist(runlistFile, options, io);
  if (command === 'schema') return await printSchema(runlistFile, extra, options, io);
  if (command !== 'converge' && command !== 'plan' && command !== 'offboard' && command !== 'verify') {
    io.stderr.write(command ? `meshvm: unknown command "${command}" (commands: ${COMMANDS.join(', ')}; meshvm help for usage)\n` : `${USAGE}\n`);
    return 1;
  }
  const mode = command === 'verify' ? 'plan' : command === 'offboard' ? 'converge' : command;
  const offboard = command === 'offboard' || Boolean(values.offboard);
  /** What the recipes' undo found and left alone. */
  const notes: string[] = [];
  const json = Boolean(values.json);
  const startedAt = new Date();
  /** What is known of the run so far, for the report of a run that fails or is interrupted before its end. */
  const run: {
    runlist: string;
    /** The runlist's name once it loaded (metrics label their series with it). */
    name?: string;
    root?: string;
    host?: Host;
    rootExisted: boolean;
    stateExisted: boolean;
    declared?: readonly Declared[];
  } = {
    runlist: runlistFile ?? '',
    rootExisted: false,
    stateExisted: false,
  };
  let human: ReturnType<typeof humanListener> | undefined;
  let lock: RunLock | undefined;
  /** What this run created before it planned (root, run/, the lock file), shallowest first: removed if it fails there. */
  const litter: string[] = [];
  // per-run services (the cluster connection, its Vault login): closed whatever happens, so a run's Vault token is revoked
  const services = new Map<string, unknown>();
  /** Whether this run's report is in last-run.json (a second signal that ends the run at once says so when not). */
  let reported = false;
  /** What a run that exits now, at a second signal, leaves undone. */
  const undone = (): string[] => [
    ...(signals.phase === 'converging' ? ['the resource in flight may be half-changed (the next run converges it)'] : []),
    ...(services.size > 0 ? ["the run's Vault token may not have been revoked (it expires at its TTL)"] : []),
    ...(mode === 'converge' && run.host && !reported ? ['last-run.json does not record this run'] : []),
    ...(litter.length > 0 ? [`what it made before planning is left (${litter.join(', ')})`] : []),
  ];
  const signals = new Signals(
    (signal, phase) => {
      const text =
        phase === 'converging'
          ? `${signal}: finishing the resource in flight, then stopping`
          : phase === 'waiting for the run lock'
            ? `${signal}: no longer waiting for the run lock`
            : `${signal}: stopping once ${phase} ends (nothing has been changed)`;
      if (human) human({ type: 'message', level: 'warn', text });
      else io.stderr.write(`meshvm: warning: ${text}\n`);
    },
    (signal, status) => {
      const left = undone();
      io.stderr.write(`meshvm: ${signal} again: exiting now (status ${status}) without finishing the clean-up${left.length ? `; ${left.join('; ')}` : ''}\n`);
    },
  );
  /** A run that stops early: its error on stderr, and a report as full as a finished run's (last-run.json, --json). */
  const fail = async (error: unknown): Promise<number> => {
    const message = secrets.redact(errorMessage(error));
    io.stderr.write(`meshvm: ${message}\n`);
    if (command === 'verify') {
      if (json) io.stdout.write(JSON.stringify({ ok: false, error: message }, null, 2) + '\n');
      return 1;
    }
    const interrupted = error instanceof Interrupted;
    const skipped = (run.declared ?? []).map((d) => ({ ref: d.ref, status: 'skipped' as const, changes: [], fields: [], seconds: 0 }));
    const result: RunResult = { resources: skipped, notifications: [], failed: !interrupted, interrupted };
    const report = buildReport(result, { meshvm: pkg.version, mode, runlist: run.runlist, root: run.root ?? values.root ?? '/', startedAt });
    report.error = message;
    if (offboard) Object.assign(report, { offboard, notes });
    const text = reportJson(report);
    // a bad runlist on a fresh root writes nothing; a root that has been converged, or a run that got this far, has its report
    const converging = signals.phase === 'converging' || signals.phase === 'reporting';
    if (mode === 'converge' && run.host && (run.stateExisted || converging || (interrupted && run.rootExisted))) {
      await writeLastRun(run.host, text, io);
      reported = true;
      // the metrics say it too: a run that fails before converging is a failed run (its last success kept)
      if (!offboard)
        await recordStatus(report, run.declared ?? [], run.host, run.name ?? path.basename(run.runlist, '.yaml'), values['textfile-dir'], human ?? (() => {}));
    }
    if (json) io.stdout.write(text);
    return 1;
  };
  /** Whether planning succeeded: only then does a converge keep what it read for the next runs (kept cluster access and inputs). */
  let planned = false;
  try {
    if (!runlistFile) throw new InputError(`meshvm ${command}`, 'missing the RUNLIST argument (a YAML file such as runlists/demo.yaml)');
    if (extra.length) throw new InputError(`meshvm ${command}`, `unexpected arguments: ${extra.join(' ')}`);
    if (values['detailed-exitcode'] && command !== 'plan') throw new InputError('--detailed-exitcode', 'only plan takes it');
    if (values.resolver && command !== 'verify') throw new InputError('--resolver', 'only verify takes it');
    if (values.offboard && command !== 'plan')
      throw new InputError('--offboard', `only plan takes it (meshvm plan --offboard RUNLIST; to offboard: meshvm offboard RUNLIST)`);
    if (values.purge && !offboard) throw new InputError('--purge', 'only offboard and plan --offboard take it');
    const lockWait = values['lock-wait'] === undefined ? 600 : Number(values['lock-wait']);
    if (!Number.isFinite(lockWait) || lockWait < 0) throw new InputError(`--lock-wait ${values['lock-wait']}`, 'expected a number of seconds');
    const { root, missing } = await checkRoot(values.root ?? '/', command);
    const host = localHost({ root });
    Object.assign(run, { root, host, rootExisted: !missing, stateExisted: !missing && Boolean(await host.stat(STATE_DIR).catch(() => undefined)) });

    const loaded = await loadRunlist(path.resolve(runlistFile), options.builtins, {
      nodeFile: values.node ? { path: path.resolve(values.node), required: true } : { path: host.realPath(NODE_FILE), required: false },
      sets: values.set ?? [],
    });
    run.runlist = loaded.file;
    run.name = loaded.name;
    signals.check();

    human = humanListener({
      stream: json ? io.stderr : io.stdout,
      color: !values['no-color'] && !io.env.NO_COLOR && Boolean((json ? io.stderr : io.stdout).isTTY),
      verbose: Boolean(values.verbose),
    });
    const say = human;
    const note = (text: string) => {
      notes.push(text);
      say({ type: 'message', level: 'info', text: `offboard: ${text}` });
    };
    const runlist = offboard ? offboardRunlist(loaded, { purge: Boolean(values.purge), note }) : loaded;
    // the lock before planning: recipes read the machine (and mint tokens) while they declare, so a run that waited
    // must plan against what the run before it left, not against what was there when it started
    if (mode === 'converge') {
      if (missing) {
        await fs.mkdir(root, { recursive: true, mode: 0o755 }).catch((error) => {
          throw new InputError(`--root ${values.root}`, `no such directory, and it cannot be created: ${errorMessage(error)}`);
        });
        io.stderr.write(`meshvm: created the root ${root} (it did not exist)\n`);
        litter.push(root);
      }
      litter.push(...(await missingPaths(host.realPath(LOCK_FILE), root)));
      signals.phase = 'waiting for the run lock';
      lock = await acquireLock(host.root, LOCK_FILE, {
        waitSeconds: lockWait,
        command: `meshvm ${command} ${runlistFile}`,
        signal: signals.aborted,
        onWait: (holder) =>
          say({
            type: 'message',
            level: 'info',
            text: `waiting up to ${lockWait} s for the run lock${holder ? ` held by pid ${holder.pid} since ${holder.startedAt} (${holder.command})` : ''}`,
          }),
      }).catch((error) => {
        signals.check();
        throw error;
      });
    }
    signals.phase = 'planning';
    const service = <T>(key: string, create: () => T): T => {
      if (!services.has(key)) services.set(key, create());
      return services.get(key) as T;
    };
    const warn = (text: string) => say({ type: 'message', level: 'warn', text: secrets.redact(text) });
    // what meshvm keeps between runs (cluster access and inputs under /run/meshvm) is written by a converge only;
    // verify checks what is true now: it reads the cluster fresh
    const context: Omit<RecipeContext, 'runlist'> = {
      host,
      mode,
      service,
      warn,
      refresh: command === 'verify' || Boolean(values.refresh),
      ...(mode === 'converge' && { writable: host }),
    };
    const { declared, entries } = await planRunlist(runlist, context);
    run.declared = declared;
    await checkRequirements(declared, host);
    await checkComposites(declared, host);
    // artifacts fetched and verified, before the first change: a failure here changes nothing (the litter goes too)
    if (command !== 'verify') await preflight(declared, { host, mode, listener: say });
    signals.check();
    litter.length = 0; // planned: from here the run's state (the lock file, last-run.json) is the machine's
    planned = true;
    if (command === 'verify') {
      signals.phase = 'verifying';
      const checks = await runChecks(entries, host, { resolver: values.resolver });
      signals.check();
      return printChecks(checks, io, json);
    }

    signals.phase = 'converging';
    say({ type: 'start', mode, ...(offboard && { offboard }), runlist: runlist.file, root: host.root, total: declared.length });
    const result = await runResources(declared, { host, mode, listener: say, interrupted: () => signals.received !== undefined });
    signals.phase = 'reporting';
    const report = buildReport(result, { meshvm: pkg.version, mode, runlist: runlist.file, root: host.root, startedAt });
    if (offboard) Object.assign(report, { offboard, notes });
    if (result.interrupted) report.error = `interrupted by ${signals.received ?? 'a signal'}`;
    // the fleet view is published through the run's cluster connection: before the services close
    const status = mode === 'converge' && !offboard ? await computeStatus(report, declared, host, runlist.name, say) : undefined;
    // an interrupted run stops promptly (a shutdown is waiting): the next run publishes
    if (status && !result.interrupted) await publishStatus(entries, status, { ...context, host, runlist: runlistInfo(runlist) }, say);
    await closeServices(services, { keep: true });
    report.apiCalls = apiCalls.snapshot(); // with the calls closing made (a Vault token revoked)

    if (offboard && mode === 'converge' && !result.failed) await tidyState(host);
    say({ type: 'done', report });
    const text = reportJson(report);
    if (mode === 'converge') {
      await writeLastRun(host, text, io);
      reported = true;
      if (status) await writeStatusMetrics({ ...status, apiCalls: report.apiCalls }, host, values['textfile-dir'], say);
      else if (offboard && !result.failed) {
        await forgetStatus(host, values['textfile-dir']);
        // the cluster access kept between runs (keepAccess): revoked at Vault and forgotten
        const { forgetKeptAccess } = await import('../clients/access-cache.ts');
        for (const problem of await forgetKeptAccess(host)) say({ type: 'message', level: 'warn', text: secrets.redact(problem) });
        // and the cluster inputs kept with it (keepInputs); /run/meshvm goes when nothing else is in it
        const { INPUTS_DIR } = await import('../clients/kept-inputs.ts');
        const { KEPT_DIR } = await import('../clients/kept-file.ts');
        const { ACCESS_CACHE_DIR } = await import('../clients/access-cache.ts');
        for (const dir of [INPUTS_DIR, ACCESS_CACHE_DIR])
          await host.remove(dir).catch((error: unknown) => warn(`could not remove ${dir}: ${errorMessage(error)}`));
        if ((await host.listDir(KEPT_DIR).catch(() => undefined))?.length === 0) await host.remove(KEPT_DIR).catch(() => undefined);
      }
    }
    if (json) io.stdout.write(text);
    if (report.outcome === 'failed' || report.outcome === 'interrupted') return 1;
    if (mode === 'plan' && values['detailed-exitcode']) return report.outcome === 'would-change' || owesRefreshes(report) ? 2 : 0;
    return 0;
  } catch (error) {
    return await fail(error);
  } finally {
    // still listening: a second signal while this clean-up hangs (a Vault that never answers the revoke) exits at once
    try {
      await closeServices(services, { keep: planned });
      // the lock file this run made goes while still locked: a waiter that then gets it sees it removed and starts again
      await lock?.release({ remove: litter.some((p) => p.endsWith(LOCK_FILE)) });
      await removeLitter(litter);
      // said of the root only, as its creation was: the lock file and /run are a run's own litter
      if (litter[0] === path.resolve(values.root ?? '/') && !(await fs.stat(litter[0]).catch(() => undefined)))
        io.stderr.write(`meshvm: removed ${litter[0]} again (the run failed before it planned)\n`);
    } finally {
      signals.dispose();
    }
  }
}

/** Refreshes this runlist would deliver (not those kept for another runlist's resources). */
function owesRefreshes(report: RunReport): boolean {
  return report.notifications.some((n) => n.status !== 'kept');
}

/** last-run.json: the report of this run, whatever its outcome; a failure to write it is said, not thrown. */
async function writeLastRun(host: Host, text: string, io: CliIO): Promise<void> {
  try {
    await ensureStateDir(host);
    await host.writeFile(LAST_RUN_FILE, text, { mode: 0o644, backup: false });
  } catch (error) {
    io.stderr.write(`meshvm: could not write the report ${host.realPath(LAST_RUN_FILE)}: ${secrets.redact(errorMessage(error))}\n`);
  }
}

/**
 * A run that failed before it planned leaves no trace: the lock file it created (removed by the lock's release while
 * still held, see engine/lock.ts), then the directories it created, deepest first (rmdir only removes empty ones).
 */
async function removeLitter(litter: readonly string[]): Promise<void> {
  for (const p of [...litter].reverse()) {
    const stat = await fs.lstat(p).catch(() => undefined);
    if (stat?.isDirectory()) await fs.rmdir(p).catch(() => {});
    else if (stat?.isFile() && (await fs.readFile(p, 'utf8').catch(() => 'x')) === '') await fs.unlink(p).catch(() => {});
  }
}

/** The path and those of its parents up to root that do not exist yet, deepest first. */
async function missingPaths(file: string, root: string): Promise<string[]> {
  const out: string[] = [];
  for (let p = file; p.startsWith(root) && p !== root && p !== path.dirname(p); p = path.dirname(p)) {
    if (await fs.lstat(p).catch(() => undefined)) break;
    out.push(p);
  }
  return out.reverse();
}

/** After an offboard: meshvm's record directories it emptied (what it wrote, the .debs it installed) go too; its report stays. */
async function tidyState(host: Host): Promise<void> {
  for (const dir of [WRITTEN_DIR, INSTALLED_DEBS_DIR, INSTALLED_PACKAGES_DIR, SERVICES_DIR]) {
    if ((await host.listDir(dir))?.length === 0) await host.remove(dir);
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
      offboard: { type: 'boolean' },
      purge: { type: 'boolean' },
      resolver: { type: 'string' },
      refresh: { type: 'boolean' },
      'textfile-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'V' },
    },
  });
}

/** Offboarded: no metrics left to say the machine stopped converging (meshvm's alert would fire), no drift baseline. */
async function forgetStatus(host: Host, textfile: string | undefined): Promise<void> {
  const dir = await textfileDir(host, textfile);
  if (dir) await host.remove(path.posix.join(dir, METRICS_FILE_NAME));
  await host.remove(STATUS_FILE);
  await host.remove(FLEET_VIEW_FILE);
}

/** The run's status after a converge: status.json (drift baseline), and the metrics file when node_exporter reads one. */
async function recordStatus(
  report: RunReport,
  declared: readonly Declared[],
  host: Host,
  runlist: string,
  textfile: string | undefined,
  say: Listener,
): Promise<void> {
  const status = await computeStatus(report, declared, host, runlist, say);
  if (status) await writeStatusMetrics(status, host, textfile, say);
}

/** The run's status; status.json (the drift baseline) updated. */
async function computeStatus(report: RunReport, declared: readonly Declared[], host: Host, runlist: string, say: Listener): Promise<RunStatus | undefined> {
  try {
    return await runStatus(report, declared, host, runlist);
  } catch (error) {
    // the converge itself is done and reported: a status that cannot be written is a warning, not a failed run
    say({ type: 'message', level: 'warn', text: `could not record the run's status: ${secrets.redact(errorMessage(error))}` });
    return undefined;
  }
}

async function writeStatusMetrics(status: RunStatus, host: Host, textfile: string | undefined, say: Listener): Promise<void> {
  try {
    const dir = await textfileDir(host, textfile);
    if (dir) await writeMetrics(host, dir, status);
  } catch (error) {
    say({ type: 'message', level: 'warn', text: `could not record the run's status: ${secrets.redact(errorMessage(error))}` });
  }
}

/** Each recipe's publish (the fleet seen from Kubernetes): what it did is said; a failure is a warning, the converge stands. */
async function publishStatus(entries: Plan['entries'], status: RunStatus, context: PublishContext, say: Listener): Promise<void> {
  for (const { recipe, attributes } of entries) {
    if (!recipe.publish) continue;
    try {
      const text = await recipe.publish(attributes, status, context);
      if (text) say({ type: 'message', level: 'info', text });
    } catch (error) {
      say({ type: 'message', level: 'warn', text: `${recipe.name}: could not publish the run's status: ${secrets.redact(errorMessage(error))}` });
    }
  }
}

function runlistInfo(runlist: Runlist): RecipeContext['runlist'] {
  return { name: runlist.name, file: runlist.file, dir: runlist.dir, recipes: runlist.entries.map((e) => e.recipe.name) };
}

/** `keep`: the run planned, so what the services keep between runs (the cluster access and inputs) is kept. */
async function closeServices(services: Map<string, unknown>, o: { keep: boolean }): Promise<void> {
  for (const service of services.values()) await (service as { close?: (o: { keep: boolean }) => Promise<void> })?.close?.(o);
  services.clear();
}

async function printSchema(kind: string | undefined, extra: readonly string[], options: CliOptions, io: CliIO): Promise<number> {
  if (!isSchemaKind(kind) || extra.length) {
    io.stderr.write(`meshvm: schema takes one of: ${SCHEMA_KINDS.join(', ')} (meshvm schema runlist > runlist.schema.json)\n`);
    return 1;
  }
  io.stdout.write(schemaText(kind, await builtinsOf(options.builtins)));
  return 0;
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
  // the editor's schema line points into the source tree (../schemas/), which a printed copy is not beside
  io.stdout.write(text.replace(/^# yaml-language-server: \$schema=.*\n/m, ''));
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

/**
 * converge into a root that does not exist yet creates it (a scratch root, as the README's demo does) and says so;
 * plan and verify only read, and a missing root is then a mistyped path.
 */
async function checkRoot(root: string, command: 'plan' | 'converge' | 'offboard' | 'verify'): Promise<{ root: string; missing: boolean }> {
  const resolved = path.resolve(root);
  const stat = await fs.stat(resolved).catch(() => undefined);
  if (!stat && command === 'converge') {
    // created once the runlist has loaded (a bad runlist leaves nothing behind); only its last part, as mkdir does:
    // a root whose parent is missing too is more likely a typo than a scratch directory
    const parent = path.dirname(resolved);
    const up = await fs.stat(parent).catch(() => undefined);
    if (!up?.isDirectory()) throw new InputError(`--root ${root}`, `no such directory, nor its parent ${parent} (converge creates only the last part)`);
    await fs.access(parent, fsc.W_OK).catch((error) => {
      throw new InputError(`--root ${root}`, `no such directory, and ${parent} is not writable to create it (${(error as NodeJS.ErrnoException).code})`);
    });
    return { root: resolved, missing: true };
  }
  if (!stat)
    throw new InputError(
      `--root ${root}`,
      `no such directory (${command} does not create it${command === 'offboard' ? ': there is nothing to take out of the mesh' : '; converge would'})`,
    );
  if (!stat.isDirectory()) throw new InputError(`--root ${root}`, 'is not a directory');
  if (command === 'converge' || command === 'offboard') {
    await fs.access(resolved, fsc.W_OK).catch((error) => {
      throw new InputError(`--root ${root}`, `is not writable (${(error as NodeJS.ErrnoException).code}); ${command} needs to write there`);
    });
  }
  return { root: resolved, missing: false };
}
