// The run's events, the JSON report (last-run.json), and how a change reads to a person.
import type { Changes, Declared } from './resource.ts';
import { SENSITIVE, secrets } from './secrets.ts';
import { apiCalls } from './api-calls.ts';
import type { RunResult } from './runner.ts';

export type ResourceStatus = 'unchanged' | 'changed' | 'would-change' | 'failed' | 'skipped';
export type RefreshStatus = 'refreshed' | 'would-refresh' | 'not-needed' | 'failed' | 'kept' | 'skipped';

export interface ResourceReport {
  ref: string;
  status: ResourceStatus;
  /** Human lines, one per changed field (content as a unified diff); sensitive values masked. */
  changes: string[];
  /** The names of the fields that differed. */
  fields: string[];
  /** What it did (or would do) besides changing state: commands run, services restarted, tokens minted. */
  actions?: string[];
  /** A composite's parts, with nested refs (`systemd_unit[x] > file[/etc/systemd/system/x]`). */
  children?: ResourceReport[];
  declaredAt?: string;
  /** Its changes were a renewal on schedule (a token re-minted before it expires), not drift. */
  renewal?: true;
  seconds: number;
  error?: string;
}

export interface RefreshReport {
  ref: string;
  status: RefreshStatus;
  /** The refs of the resources whose change asked for it (in this or an earlier run). */
  because: string[];
  /** Why it is still owed (kept: another runlist's resource; skipped: the run was interrupted). */
  why?: string;
  error?: string;
}

export interface RunReport {
  meshvm: string;
  mode: 'converge' | 'plan';
  runlist: string;
  root: string;
  startedAt: string;
  finishedAt: string;
  outcome: 'unchanged' | 'changed' | 'would-change' | 'failed' | 'interrupted';
  interrupted: boolean;
  summary: { total: number; changed: number; failed: number; skipped: number; unchanged: number; seconds: number };
  resources: ResourceReport[];
  notifications: RefreshReport[];
  /** API calls per service during the run (vault, kubernetes, route53). */
  apiCalls: Record<string, number>;
  /** Set when the run was an offboard (meshvm offboard, plan --offboard): the recipes' undo. */
  offboard?: boolean;
  /** Offboard: what the recipes found and left alone, not being provably meshvm's. */
  notes?: string[];
  error?: string;
}

export type RunEvent =
  | { type: 'start'; mode: RunReport['mode']; offboard?: boolean; runlist: string; root: string; total: number }
  | { type: 'checking'; ref: string; index: number; total: number }
  | { type: 'resource'; report: ResourceReport; index: number; total: number }
  | { type: 'refresh'; report: RefreshReport }
  | { type: 'message'; level: 'info' | 'warn'; text: string }
  | { type: 'done'; report: RunReport };

export type Listener = (event: RunEvent) => void;

const MAX_DIFF_LINES = 120;

/** Chef-like lines: `set mode to 0640 (was 0644)`, a unified diff for text, `(sensitive)` for secrets. */
export async function describeChanges(declared: Declared, changes: Changes<any>): Promise<string[]> {
  const sensitive = new Set<string>(declared.type.sensitive?.(declared.spec) ?? []);
  const lines: string[] = [];
  for (const [field, change] of Object.entries(changes) as [string, { from: unknown; to: unknown }][]) {
    if (sensitive.has(field)) {
      lines.push(change.from === undefined ? `set ${field} ${SENSITIVE}` : `update ${field} ${SENSITIVE}`);
      continue;
    }
    const custom = declared.type.describe?.(field, change);
    if (custom !== undefined) {
      lines.push(custom);
      continue;
    }
    if (typeof change.to === 'string' && (change.to.includes('\n') || (typeof change.from === 'string' && change.from.includes('\n')))) {
      lines.push(await unifiedDiff(field, typeof change.from === 'string' ? change.from : '', change.to));
      continue;
    }
    const show = (v: unknown) => declared.type.format?.(field, v) ?? (typeof v === 'string' ? v : JSON.stringify(v));
    lines.push(change.from === undefined ? `set ${field} to ${show(change.to)}` : `set ${field} to ${show(change.to)} (was ${show(change.from)})`);
  }
  return lines.map((line) => secrets.redact(line));
}

async function unifiedDiff(field: string, from: string, to: string): Promise<string> {
  const { structuredPatch } = await import('diff');
  const patch = structuredPatch('current', 'desired', from, to, '', '', { context: 3 });
  const body: string[] = [];
  for (const hunk of patch.hunks) {
    body.push(`@@ -${range(hunk.oldStart, hunk.oldLines)} +${range(hunk.newStart, hunk.newLines)} @@`, ...hunk.lines);
  }
  const shown = body.length > MAX_DIFF_LINES ? [...body.slice(0, MAX_DIFF_LINES), `... ${body.length - MAX_DIFF_LINES} more diff lines`] : body;
  const count = to.split('\n').length - (to.endsWith('\n') ? 1 : 0);
  const head = from === '' ? `set ${field} (${count} ${count === 1 ? 'line' : 'lines'})` : `update ${field}`;
  return [head, ...shown.map((l) => `  ${l}`)].join('\n');
}

/** A hunk range as GNU diff writes it: "3" for one line, "0,0" for none. */
function range(start: number, lines: number): string {
  return lines === 1 ? `${start}` : lines === 0 ? `${start - 1},0` : `${start},${lines}`;
}

/** The run's report: outcome, counts, every resource and notification, the API calls made. */
export function buildReport(result: RunResult, run: { meshvm: string; mode: RunReport['mode']; runlist: string; root: string; startedAt: Date }): RunReport {
  const count = (...statuses: ResourceStatus[]) => result.resources.filter((r) => statuses.includes(r.status)).length;
  const changed = count('changed', 'would-change');
  const refreshFailed = result.notifications.some((n) => n.status === 'failed');
  const error = firstError(result);
  return {
    meshvm: run.meshvm,
    mode: run.mode,
    runlist: run.runlist,
    root: run.root,
    startedAt: run.startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    outcome: result.interrupted
      ? 'interrupted'
      : result.failed || refreshFailed
        ? 'failed'
        : changed
          ? run.mode === 'plan'
            ? 'would-change'
            : 'changed'
          : 'unchanged',
    interrupted: result.interrupted,
    summary: {
      total: result.resources.length,
      changed,
      failed: count('failed'),
      skipped: count('skipped'),
      unchanged: count('unchanged'),
      seconds: Math.round((Date.now() - run.startedAt.getTime()) / 10) / 100,
    },
    resources: result.resources,
    notifications: result.notifications,
    apiCalls: apiCalls.snapshot(),
    ...(error !== undefined && { error }),
  };
}

/** What stopped a failed run: the first failed resource's error, or else the first failed refresh's. */
function firstError(result: RunResult): string | undefined {
  return (result.resources.find((r) => r.status === 'failed') ?? result.notifications.find((n) => n.status === 'failed'))?.error;
}

/** The report as stored and printed: every string passed through redaction once more. */
export function reportJson(report: RunReport): string {
  return secrets.redact(JSON.stringify(report, null, 2)) + '\n';
}
