// The runner: resources in declaration order, the first failure stops, delayed notifications delivered once at the end.
import type { Host } from './host.ts';
import type { Changes, Declared } from './resource.ts';
import { hasChanges } from './resource.ts';
import { ResourceError, errorMessage } from './errors.ts';
import { describeChanges, type Listener, type RefreshReport, type ResourceReport } from './report.ts';
import { secrets } from './secrets.ts';

export const PENDING_FILE = '/var/lib/meshvm/pending.json';

export interface RunOptions {
  host: Host;
  mode: 'converge' | 'plan';
  listener?: Listener;
  /** Set when SIGINT/SIGTERM arrived: the resource in flight finishes, the rest are skipped. */
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
  const applied = new Map<string, Changes<any>>();
  const resources: ResourceReport[] = [];
  let failed = false;
  let interrupted = false;

  for (const [index, item] of declared.entries()) {
    if (!failed && !interrupted && options.interrupted?.()) interrupted = true;
    if (failed || interrupted) {
      resources.push({ ref: item.ref, status: 'skipped', changes: [], fields: [], seconds: 0, ...(item.declaredAt && { declaredAt: item.declaredAt }) });
      continue;
    }
    listener({ type: 'checking', ref: item.ref, index, total: declared.length });
    const report = await converge(item, host, plan, applied, pending);
    if (report.status === 'failed') failed = true;
    resources.push(report);
    listener({ type: 'resource', report, index, total: declared.length });
  }
  if (!interrupted && options.interrupted?.()) interrupted = true;

  const notifications = interrupted ? pending.report('skipped') : await deliver(declared, host, plan, applied, pending, listener);
  if (notifications.some((n) => n.status === 'failed')) failed = true;
  return { resources, notifications, failed, interrupted };
}

async function converge(item: Declared, host: Host, plan: boolean, applied: Map<string, Changes<any>>, pending: Pending): Promise<ResourceReport> {
  const started = performance.now();
  const base = { ref: item.ref, ...(item.declaredAt && { declaredAt: item.declaredAt }) };
  const seconds = () => round((performance.now() - started) / 1000);
  let phase: 'read' | 'apply' = 'read';
  let lines: string[] = [];
  let fields: string[] = [];
  try {
    const current = await item.type.current(host, item.spec);
    const changes = item.type.changes(item.spec, current);
    if (!hasChanges(changes)) return { ...base, status: 'unchanged', changes: [], fields: [], seconds: seconds() };
    fields = Object.keys(changes);
    lines = await describeChanges(item, changes);
    if (plan) {
      for (const target of item.notifies) pending.owe(target.ref, item.ref);
      return { ...base, status: 'would-change', changes: lines, fields, seconds: seconds() };
    }
    phase = 'apply';
    await item.type.apply(host, item.spec, changes, current);
    applied.set(item.ref, changes);
    for (const target of item.notifies) pending.owe(target.ref, item.ref);
    await pending.save();
    return { ...base, status: 'changed', changes: lines, fields, seconds: seconds() };
  } catch (error) {
    const failure = new ResourceError(item.ref, phase, error, item.declaredAt);
    return { ...base, status: 'failed', changes: lines, fields, seconds: seconds(), error: secrets.redact(failure.message) };
  }
}

async function deliver(
  declared: readonly Declared[],
  host: Host,
  plan: boolean,
  applied: Map<string, Changes<any>>,
  pending: Pending,
  listener: Listener,
): Promise<RefreshReport[]> {
  const byRef = new Map(declared.map((d) => [d.ref, d]));
  const owed = pending.refs();
  // declaration order, then anything owed by an earlier run that this runlist no longer declares
  const order = [...declared.map((d) => d.ref).filter((ref) => owed.has(ref)), ...[...owed.keys()].filter((ref) => !byRef.has(ref))];
  const reports: RefreshReport[] = [];
  for (const ref of order) {
    const because = [...owed.get(ref)!];
    const target = byRef.get(ref);
    let report: RefreshReport;
    if (!target) {
      report = { ref, status: 'dropped', because, error: 'no longer declared by this runlist' };
      if (!plan) pending.settle(ref);
    } else if (plan) {
      report = { ref, status: 'would-refresh', because };
    } else if (target.type.applySatisfiesRefresh?.(applied.get(ref) ?? {}) && applied.has(ref)) {
      report = { ref, status: 'not-needed', because };
      pending.settle(ref);
    } else {
      try {
        await target.type.refresh!(host, target.spec);
        report = { ref, status: 'refreshed', because };
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
    return [...this.#owed].map(([ref, because]) => ({ ref, status, because: [...because] }));
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
  if (!(await host.stat('/var/lib/meshvm'))) await host.mkdir('/var/lib/meshvm', { mode: 0o755 });
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
