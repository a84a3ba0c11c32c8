// The run's status for Prometheus: a file for node_exporter's textfile collector, replaced atomically after each converge.
import path from 'node:path';
import type { Host } from './host.ts';
import type { RunReport } from './report.ts';
import type { RunStatus } from './run-status.ts';

/** Where node_exporter's textfile collector reads by default: Debian/Ubuntu's package, then the RHEL-family (EPEL) one. */
export const TEXTFILE_DIRS = ['/var/lib/prometheus/node-exporter', '/var/lib/node_exporter/textfile_collector'] as const;
export const METRICS_FILE_NAME = 'meshvm.prom';

const OUTCOMES: readonly RunReport['outcome'][] = ['changed', 'unchanged', 'failed', 'interrupted'];

/** The exposition text (version 0.0.4) of a status. */
export function renderMetrics(status: RunStatus): string {
  const out: string[] = [];
  const metric = (name: string, help: string, samples: readonly [labels: Record<string, string>, value: number][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
    for (const [labels, value] of samples) out.push(`${name}${labelText(labels)} ${formatValue(value)}`);
  };
  const seconds = (d: Date) => d.getTime() / 1000;
  metric('meshvm_info', "meshvm's version and the runlist it converges.", [[{ version: status.meshvm, runlist: status.runlist }, 1]]);
  metric('meshvm_last_run_timestamp_seconds', 'When the last converge finished.', [[{}, seconds(status.finishedAt)]]);
  metric('meshvm_last_run_duration_seconds', 'How long the last converge took.', [[{}, status.seconds]]);
  metric('meshvm_last_run_success', 'Whether the last converge left the machine as its runlist says (1) or not (0).', [
    [{}, status.outcome === 'changed' || status.outcome === 'unchanged' ? 1 : 0],
  ]);
  metric(
    'meshvm_last_run_outcome',
    "The last converge's outcome (1 for the one it had).",
    OUTCOMES.map((o) => [{ outcome: o }, o === status.outcome ? 1 : 0]),
  );
  if (status.lastSuccessAt) metric('meshvm_last_success_timestamp_seconds', 'When a converge last succeeded.', [[{}, seconds(status.lastSuccessAt)]]);
  metric(
    'meshvm_last_run_resources',
    'Resources of the last converge by what happened to them.',
    (['total', 'changed', 'failed', 'skipped'] as const).map((s) => [{ status: s }, status.resources[s]]),
  );
  metric('meshvm_last_run_drift_resources', 'Resources the last converge found drifted (changed while their declaration had not).', [
    [{}, status.drift.length],
  ]);
  metric(
    'meshvm_expiry_timestamp_seconds',
    'When a certificate or token meshvm keeps stops being valid (the earliest in a bundle).',
    status.expiries.map((e) => [{ what: e.what, resource: e.ref }, seconds(e.at)]),
  );
  metric(
    'meshvm_last_run_api_calls',
    'API calls the last converge made, by service.',
    ['vault', 'kubernetes', 'route53'].map((s) => [{ service: s }, status.apiCalls[s] ?? 0]),
  );
  return `${out.join('\n')}\n`;
}

/** `{a="x",b="y"}`, values escaped as the text format says (backslash, double quote, newline). */
function labelText(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return pairs.length ? `{${pairs.join(',')}}` : '';
}

function formatValue(n: number): string {
  return Number.isFinite(n) ? String(n) : 'NaN';
}

/**
 * The directory to write to: the one given (--textfile-dir), else the first of node_exporter's default directories that
 * exists on the machine; none when neither (no node_exporter: nothing is written).
 */
export async function textfileDir(host: Host, given: string | undefined): Promise<string | undefined> {
  if (given) return given;
  for (const dir of TEXTFILE_DIRS) if ((await host.stat(dir))?.type === 'directory') return dir;
  return undefined;
}

/** Replaces DIR/meshvm.prom atomically (a temp file beside it, renamed: the collector never reads half a file). */
export async function writeMetrics(host: Host, dir: string, status: RunStatus): Promise<string> {
  const file = path.posix.join(dir, METRICS_FILE_NAME);
  await host.writeFile(file, renderMetrics(status), { mode: 0o644, backup: false });
  return file;
}
