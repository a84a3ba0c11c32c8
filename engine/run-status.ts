// A converge's status for the fleet: outcome and counts, drift found, the expiry of certificates and tokens, the API calls.
// Drift is a change to a resource whose declaration is what it was at the last converge that left it right (Puppet's
// "corrective change"): the machine moved, the runlist did not. A renewal on schedule (a token) is not drift.
import { createHash } from 'node:crypto';
import type { Host } from './host.ts';
import type { Declared } from './resource.ts';
import type { ResourceReport, RunReport } from './report.ts';
import { ensureStateDir } from './runner.ts';
import { STATUS_FILE } from './state-paths.ts';

export interface RunStatus {
  meshvm: string;
  runlist: string;
  finishedAt: Date;
  seconds: number;
  outcome: RunReport['outcome'];
  /** The last run that did not fail (this one, or an earlier one kept in status.json). */
  lastSuccessAt: Date | undefined;
  resources: { total: number; changed: number; failed: number; skipped: number };
  /** Resources changed although their declaration had not changed since they were last right. */
  drift: string[];
  expiries: { ref: string; what: 'certificate' | 'token'; at: Date }[];
  apiCalls: Record<string, number>;
}

interface StoredStatus {
  digests: Record<string, string>;
  lastSuccessAt?: string;
}

/** The status of a converge that has just run (its report, its declarations, the runlist's name); updates status.json when it differs. */
export async function runStatus(report: RunReport, declared: readonly Declared[], host: Host, runlist: string): Promise<RunStatus> {
  const stored = await readStored(host);
  const byRef = new Map(report.resources.map((r) => [r.ref, r]));
  const digests: Record<string, string> = {};
  const drift: string[] = [];
  // a run that did not get as far as its resources (it failed while loading or planning) keeps every baseline
  if (declared.length === 0) Object.assign(digests, stored.digests);
  for (const item of declared) {
    const resource = byRef.get(item.ref);
    const digest = specDigest(item.spec);
    if (resource && isDrift(resource) && stored.digests[item.ref] === digest) drift.push(item.ref);
    // a resource this run left right is the next run's baseline; one it did not reach keeps the baseline it had
    if (resource?.status === 'changed' || resource?.status === 'unchanged') digests[item.ref] = digest;
    else if (resource?.status === 'skipped' && stored.digests[item.ref] !== undefined) digests[item.ref] = stored.digests[item.ref]!;
  }
  const succeeded = report.outcome === 'changed' || report.outcome === 'unchanged';
  const lastSuccessAt = succeeded ? report.finishedAt : stored.lastSuccessAt;
  await saveStored(host, stored, { digests, ...(lastSuccessAt && { lastSuccessAt }) });
  return {
    meshvm: report.meshvm,
    runlist,
    finishedAt: new Date(report.finishedAt),
    seconds: report.summary.seconds,
    outcome: report.outcome,
    lastSuccessAt: lastSuccessAt ? new Date(lastSuccessAt) : undefined,
    resources: { total: report.summary.total, changed: report.summary.changed, failed: report.summary.failed, skipped: report.summary.skipped },
    drift,
    expiries: await readExpiries(declared, host),
    apiCalls: report.apiCalls,
  };
}

function isDrift(resource: ResourceReport): boolean {
  return resource.status === 'changed' && !resource.renewal;
}

/** What the declarations say now, read after the converge: a failing read leaves that one out (the run's report has its error). */
async function readExpiries(declared: readonly Declared[], host: Host): Promise<RunStatus['expiries']> {
  const out: RunStatus['expiries'] = [];
  for (const item of declared) {
    const expiry = await item.type.expiry?.(host, item.spec).catch(() => undefined);
    if (expiry && Number.isFinite(expiry.at.getTime())) out.push({ ref: item.ref, ...expiry });
  }
  return out;
}

/** A short digest of a declaration (functions, such as a token's minter, are not part of it). */
export function specDigest(spec: unknown): string {
  return createHash('sha256').update(stableJson(spec)).digest('hex').slice(0, 16);
}

function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, v[k]]),
        )
      : v,
  );
}

async function readStored(host: Host): Promise<StoredStatus> {
  const text = await host.readFile(STATUS_FILE);
  try {
    const data = JSON.parse(text ?? '{}') as Partial<StoredStatus>;
    const digests = data.digests && typeof data.digests === 'object' ? data.digests : {};
    return { digests, ...(typeof data.lastSuccessAt === 'string' && { lastSuccessAt: data.lastSuccessAt }) };
  } catch {
    return { digests: {} }; // a damaged file: no baseline, so no drift is claimed this once
  }
}

async function saveStored(host: Host, before: StoredStatus, after: StoredStatus): Promise<void> {
  const text = `${JSON.stringify(after, null, 2)}\n`;
  if (text === `${JSON.stringify(before, null, 2)}\n`) return;
  await ensureStateDir(host);
  // root-only: the digests cover whole specs, secrets included; a short secret could be guessed from a readable digest
  await host.writeFile(STATUS_FILE, text, { mode: 0o600, backup: false });
}
