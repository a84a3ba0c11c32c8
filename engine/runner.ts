// The runner: resources in declaration order, the first failure stops, delayed notifications delivered once at the end.
import type { Host } from './host.ts';
import { isDeepStrictEqual } from 'node:util';
import type { Action, Applied, Changes, Declared } from './resource.ts';
import { hasChanges, isAction } from './resource.ts';
import { ResourceError } from './errors.ts';
import { describeChanges, type Listener, type RefreshReport, type ResourceReport } from './report.ts';
import { secrets } from './secrets.ts';
import { expandChildren, PART_OF, readComposite } from './composite.ts';
import { PENDING_FILE, STATE_DIR } from './state-paths.ts';
import { faultPoint } from './faults.ts';

export { PENDING_FILE };

export interface RunOptions {
  host: Host;
  mode: 'converge' | 'plan';
  listener?: Listener;
  /** Set when SIGINT/SIGTERM arrived: the resource (or refresh) in flight finishes, the rest are skipped and stay owed. */
  interrupted?: () => boolean;
}

export interface RunResult {
  resources: ResourceReport[];
  notifications: RefreshReport[];
  failed: boolean;
  interrupted: boolean;
}

/** Converges (or plans) the declared resources, then delivers the notifications owed, including those of earlier runs. */
export async function runResources(declared: readonly Declared[], options: RunOptions): Promise<RunResult> {
  const { host, mode, listener = () => {} } = options;
  const plan = mode === 'plan';
  const pending = new Pending(host, plan);
  await pending.load();
  const applied = new Map<string, Applied<any>>();
  const run: RunState = { host, plan, byRef: new Map(declared.map((d) => [d.ref, d])), applied, pending };
  const resources: ResourceReport[] = [];
  let failed = false;
  let interrupted = false;
  let changedSome = false;

  for (const [index, item] of declared.entries()) {
    if (!failed && !interrupted && options.interrupted?.()) interrupted = true;
    if (failed || interrupted) {
      resources.push({ ref: item.ref, status: 'skipped', changes: [], fields: [], seconds: 0, ...(item.declaredAt && { declaredAt: item.declaredAt }) });
      continue;
    }
    // read ahead while the run has changed nothing: after a change every read ahead would be forgotten and made again
    if (!changedSome) readAhead(declared, index, host);
    listener({ type: 'checking', ref: item.ref, index, total: declared.length });
    const { report } = await converge(item, run);
    if (report.status === 'failed') failed = true;
    if (report.status === 'changed') changedSome = true;
    resources.push(report);
    listener({ type: 'resource', report, index, total: declared.length });
  }
  if (!interrupted && options.interrupted?.()) interrupted = true;

  const notifications = interrupted ? pending.report('skipped') : await deliver(declared, run, listener, options.interrupted);
  // a signal during delivery: the refresh in flight finished, the rest stay owed, and the run says it was interrupted
  if (!interrupted && options.interrupted?.()) interrupted = true;
  if (notifications.some((n) => n.status === 'failed')) failed = true;
  return { resources, notifications, failed, interrupted };
}

/** How many resources ahead of the one converging have their state read meanwhile (bounded: open files, memory). */
const READ_AHEAD = 8;

/**
 * Starts reading the state of the next few resources whose type allows it (readAhead: current() reads only this
 * machine, every change of which goes through the host), so that their reads wait on the file system together rather
 * one after another. Each read is the run's memo, which any change on the host forgets: a resource after a change
 * reads again, as it would have. Only until the run's first change (the no-op and the plan, where it pays): after one,
 * every read started ahead (an Iptables resource's *-save commands too) would be thrown away at the next change.
 */
function readAhead(declared: readonly Declared[], index: number, host: Host): void {
  for (const next of declared.slice(index, index + READ_AHEAD)) {
    if (next.type.readAhead && !next.type.children) readCurrent(host, next).catch(() => {}); // its error is converge's to report
  }
}

function readCurrent(host: Host, item: Declared): Promise<unknown> {
  if (!item.type.readAhead) return item.type.current(host, item.spec);
  return host.memo(`read-ahead:${item.ref}`, () => item.type.current(host, item.spec));
}

/** What the run knows while it converges: the top-level declarations (for a composite's children) and what was applied. */
interface RunState {
  host: Host;
  plan: boolean;
  byRef: ReadonlyMap<string, Declared>;
  applied: Map<string, Applied<any>>;
  pending: Pending;
}

/** A refresh owed: `target` is notified because `because` changed. */
interface Owed {
  target: string;
  because: string;
}

/**
 * Converges one resource (a composite's child too). Its notifications (and those of the composites it is part of) are
 * write-ahead: on disk in pending.json before its first effect lands, so a run killed right after a file's rename
 * still owes the restart. Withdrawn again when nothing changed after all; kept when the resource failed part-way.
 */
async function converge(item: Declared, run: RunState, inherited: readonly Owed[] = []): Promise<Converged> {
  const owes = [...inherited, ...item.notifies.map((target) => ({ target: target.ref, because: item.ref }))];
  const added: Owed[] = [];
  const writeAhead = async () => {
    if (run.plan || owes.length === 0) return;
    added.push(...run.pending.add(owes));
    await run.pending.save();
  };
  const converged = await convergeOne(item, run, owes, writeAhead);
  if (converged.changed) {
    for (const target of item.notifies) run.pending.owe(target.ref, item.ref);
  } else if (added.length && (converged.report.status !== 'failed' || (await nothingLanded(item, run.host, converged)))) {
    run.pending.withdraw(added);
  }
  if (!run.plan) await run.pending.save();
  return converged;
}

/**
 * Whether a resource that failed part-way left the machine as it found it: read again, it differs in exactly what it
 * differed before (a File whose verify refused the new content). A composite's parts cannot be told apart this way.
 */
async function nothingLanded(item: Declared, host: Host, converged: Converged): Promise<boolean> {
  if (item.type.children || converged.before === undefined) return false;
  try {
    const after = item.type.changes(item.spec, await item.type.current(host, item.spec));
    return isDeepStrictEqual(after, converged.before);
  } catch {
    return false;
  }
}

/** A resource's report, and whether it changed something (in plan: would), whatever its status says. */
interface Converged {
  report: ResourceReport;
  changed: boolean;
  /** What differed when it was read (before anything was applied). */
  before?: Changes<any>;
}

/** Read, diff, apply; then a composite's children in order; then the actions. The first failure stops the resource. */
async function convergeOne(item: Declared, run: RunState, owes: readonly Owed[], writeAhead: () => Promise<void>): Promise<Converged> {
  const { host, plan } = run;
  const started = performance.now();
  const base = { ref: item.ref, ...(item.declaredAt && { declaredAt: item.declaredAt }) };
  const seconds = () => round((performance.now() - started) / 1000);
  let phase: 'read' | 'apply' = 'read';
  const lines: string[] = [];
  const fields: string[] = [];
  const actionLines: string[] = [];
  const children: ResourceReport[] = [];
  const done: string[] = [];
  let changed = false;
  let renewal = false;
  let before: Changes<any> | undefined;
  const finish = (status: ResourceReport['status'], error?: unknown): Converged => ({
    changed,
    before,
    report: {
      ...base,
      status,
      changes: lines,
      fields,
      ...(actionLines.length && { actions: actionLines }),
      ...(children.length && { children }),
      ...(renewal && { renewal: true }),
      seconds: seconds(),
      ...(error !== undefined && { error: secrets.redact(new ResourceError(item.ref, phase, error, item.declaredAt).message) }),
    } satisfies ResourceReport,
  });
  try {
    const current = item.type.children ? await readComposite(host, item) : await readCurrent(host, item);
    const changes = item.type.changes(item.spec, current);
    renewal = hasChanges(changes) && Boolean(item.type.renewal?.(changes));
    before = changes;
    const parts = item.type.children ? expandChildren(item, current, run.byRef) : [];
    const actions = item.type.actions?.(item.spec, current, changes) ?? [];
    if (!hasChanges(changes) && actions.length === 0 && parts.length === 0) return finish('unchanged');
    fields.push(...Object.keys(changes));
    lines.push(...(await describeChanges(item, changes)));
    if (hasChanges(changes) && !plan) {
      phase = 'apply';
      if (!item.type.apply) throw new Error(`${item.type.kind} found changes (${fields.join(', ')}) but has no apply`);
      await writeAhead();
      await item.type.apply(host, item.spec, changes, current);
      faultPoint('kill-after-apply', item.ref);
    }
    if (hasChanges(changes)) changed = true;
    // the children, an action among them done when a child before it changed
    let changedSince = false;
    for (const part of parts) {
      if (isAction(part)) {
        if (!changedSince) continue;
        changedSince = false;
        phase = 'apply';
        if (!part.skip) await writeAhead();
        const line = await act(part, host, plan);
        actionLines.push(line);
        lines.push(line);
        if (!part.skip) {
          done.push(part.action);
          changed = true;
        }
        continue;
      }
      const child = part;
      phase = 'read';
      const { report: childReport, changed: childChanged } = await converge(child, run, owes);
      if (childChanged) changed = true;
      if (childReport.status === 'unchanged') continue;
      children.push(childReport);
      if (childReport.status === 'failed') {
        lines.push(...childLines(item, childReport));
        const failed = finish('failed');
        return { ...failed, report: { ...failed.report, error: childReport.error! } };
      }
      changedSince = true;
      fields.push(child.ref.slice(item.ref.length + PART_OF.length));
      lines.push(...childLines(item, childReport));
    }
    for (const action of actions) {
      phase = 'apply';
      if (!action.skip) await writeAhead();
      const line = await act(action, host, plan);
      actionLines.push(line);
      lines.push(line);
      if (!action.skip) {
        done.push(action.action);
        changed = true;
      }
    }
    if (lines.length === 0) return finish('unchanged');
    if (!plan) run.applied.set(item.ref, { changes, actions: done });
    return finish(plan ? 'would-change' : 'changed');
  } catch (error) {
    return finish('failed', error);
  }
}

/** Runs an action (not in plan) and says how it reads. */
async function act(action: Action, host: Host, plan: boolean): Promise<string> {
  if (action.skip) return secrets.redact(`not going to ${action.action}: ${action.skip}`);
  if (!plan) await action.run(host);
  return secrets.redact(action.action);
}

/** A child's lines in its parent's report: the child's own ref (the part after "parent > "), then its lines indented. */
function childLines(parent: Declared, child: ResourceReport): string[] {
  const own = child.ref.slice(parent.ref.length + PART_OF.length);
  if (child.changes.length === 0) return [];
  return [
    `${own}:\n${child.changes
      .map((l) =>
        l
          .split('\n')
          .map((x) => `  ${x}`)
          .join('\n'),
      )
      .join('\n')}`,
  ];
}

/**
 * Delivers what is owed, in declaration order. A refresh owed to a resource this runlist does not declare is kept
 * (another runlist owes it: the run that declares it delivers it); an interrupt leaves the rest owed.
 */
async function deliver(declared: readonly Declared[], run: RunState, listener: Listener, interrupted?: () => boolean): Promise<RefreshReport[]> {
  const { host, plan, applied, pending, byRef } = run;
  const owed = pending.refs();
  // declaration order, then anything owed by an earlier run that this runlist does not declare
  const order = [...declared.map((d) => d.ref).filter((ref) => owed.has(ref)), ...[...owed.keys()].filter((ref) => !byRef.has(ref))];
  const reports: RefreshReport[] = [];
  for (const ref of order) {
    const because = [...owed.get(ref)!];
    const target = byRef.get(ref);
    let report: RefreshReport;
    if (!target) {
      report = { ref, status: 'kept', because, why: 'not declared by this runlist: still owed, until a run that declares it delivers it' };
    } else if (plan) {
      report = { ref, status: 'would-refresh', because };
    } else if (interrupted?.()) {
      report = { ref, status: 'skipped', because, why: 'interrupted: still owed, delivered by the next run' };
    } else {
      try {
        const outcome = await target.type.refresh!(host, target.spec, applied.get(ref));
        report = { ref, status: outcome === 'not-needed' ? 'not-needed' : 'refreshed', because };
        pending.settle(ref);
      } catch (error) {
        report = { ref, status: 'failed', because, error: secrets.redact(new ResourceError(ref, 'refresh', error, target.declaredAt).message) };
      }
    }
    if (!plan) await pending.save();
    reports.push(report);
    listener({ type: 'refresh', report });
  }
  return reports;
}

/** Refreshes owed, kept in /var/lib/meshvm/pending.json until delivered, so a restart owed by a failed run is never lost. */
class Pending {
  readonly #host: Host;
  readonly #plan: boolean;
  #owed = new Map<string, Set<string>>();
  #saved = '';

  constructor(host: Host, plan: boolean) {
    this.#host = host;
    this.#plan = plan;
  }

  async load(): Promise<void> {
    const text = await this.#host.readFile(PENDING_FILE);
    if (!text) return;
    this.#saved = text;
    try {
      const data = JSON.parse(text) as { owed?: Record<string, string[]> };
      for (const [ref, because] of Object.entries(data.owed ?? {})) this.#owed.set(ref, new Set(because));
    } catch {
      // a hand-edited file that is not JSON: nothing in it can be trusted, and the next save replaces it
    }
  }

  /** Owes each refresh not owed yet; returns those it added. */
  add(owes: readonly Owed[]): Owed[] {
    const fresh = owes.filter((o) => !this.#owed.get(o.target)?.has(o.because));
    for (const o of fresh) this.owe(o.target, o.because);
    return fresh;
  }

  /** Takes back refreshes owed ahead of a change that did not happen. */
  withdraw(owes: readonly Owed[]): void {
    for (const { target, because } of owes) {
      const set = this.#owed.get(target);
      set?.delete(because);
      if (set?.size === 0) this.#owed.delete(target);
    }
  }

  owe(target: string, because: string): void {
    const set = this.#owed.get(target) ?? new Set<string>();
    set.add(because);
    this.#owed.set(target, set);
  }

  settle(ref: string): void {
    this.#owed.delete(ref);
  }

  refs(): Map<string, Set<string>> {
    return this.#owed;
  }

  report(status: RefreshReport['status']): RefreshReport[] {
    return [...this.#owed].map(([ref, because]) => ({ ref, status, because: [...because], why: 'interrupted: still owed, delivered by the next run' }));
  }

  async save(): Promise<void> {
    if (this.#plan) return;
    const owed = Object.fromEntries([...this.#owed].map(([ref, because]) => [ref, [...because]]));
    const text = Object.keys(owed).length ? JSON.stringify({ owed }, null, 2) + '\n' : '';
    if (text === this.#saved) return;
    if (text) {
      await ensureStateDir(this.#host);
      await this.#host.writeFile(PENDING_FILE, text, { mode: 0o644, backup: false });
    } else {
      await this.#host.remove(PENDING_FILE);
    }
    this.#saved = text;
  }
}

export async function ensureStateDir(host: Host): Promise<void> {
  if (!(await host.stat(STATE_DIR))) await host.mkdir(STATE_DIR, { mode: 0o755 });
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
