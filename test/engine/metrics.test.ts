// The run's status for Prometheus: meshvm.prom served by Debian's real node_exporter (prometheus-node-exporter, its
// textfile collector on a loopback port), drift told from a new declaration, and the example alert rules checked and
// unit-tested by Debian's real promtool.
import test from 'ava';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { execa, type ResultPromise } from 'execa';
import { meshvm, scratchRoot, snapshot, PROJECT } from '../helpers/scratch.ts';
import { until } from '../helpers/poll.ts';
import { renderMetrics } from '../../engine/metrics.ts';

const DEMO = path.join(PROJECT, 'runlists/demo.yaml');
const TEXTFILE_DIR = 'var/lib/prometheus/node-exporter'; // Debian's default, found by meshvm without a flag
const onPath = async (cmd: string) => (await execa('sh', ['-c', `command -v ${cmd}`], { reject: false })).exitCode === 0;
const nodeExporter = await onPath('prometheus-node-exporter');
const promtool = await onPath('promtool');

async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** node_exporter with only the textfile collector, on loopback; stopped when the test ends. */
async function startNodeExporter(t: import('ava').ExecutionContext, dir: string): Promise<() => Promise<string>> {
  const port = await freePort();
  const child: ResultPromise = execa(
    'prometheus-node-exporter',
    ['--collector.disable-defaults', '--collector.textfile', `--collector.textfile.directory=${dir}`, `--web.listen-address=127.0.0.1:${port}`],
    { reject: false },
  );
  t.teardown(() => {
    child.kill();
  });
  const scrape = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  await until(
    () =>
      scrape().then(
        () => true,
        () => false,
      ),
    { what: 'node_exporter to listen', timeoutMs: 10_000 },
  );
  return scrape;
}

/** The value of one sample line (`name{labels} value`) in an exposition text. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

(nodeExporter ? test : test.skip)(
  "a converge's status is served by node_exporter's textfile collector; a hand edit is drift, a new declaration is not",
  async (t) => {
    const root = await scratchRoot(t);
    const dir = path.join(root, TEXTFILE_DIR);
    await fs.mkdir(dir, { recursive: true });
    const scrape = await startNodeExporter(t, dir);

    const first = await meshvm(['converge', DEMO, '--root', root]);
    t.is(first.exitCode, 0, first.stderr);
    let text = await scrape();
    t.is(sample(text, 'node_textfile_scrape_error'), 0, 'node_exporter parsed meshvm.prom');
    t.is(sample(text, 'meshvm_last_run_success'), 1);
    t.is(sample(text, 'meshvm_last_run_outcome{outcome="changed"}'), 1);
    t.is(sample(text, 'meshvm_last_run_drift_resources'), 0, 'a first converge finds no drift: nothing was right before');
    t.true(sample(text, 'meshvm_last_run_resources{status="changed"}')! > 0);
    const chain = new X509Certificate(await fs.readFile(path.join(PROJECT, 'examples/demo-certs/cert-chain.pem')));
    t.is(sample(text, 'meshvm_expiry_timestamp_seconds{resource="file[/etc/certs/cert-chain.pem]",what="certificate"}'), Date.parse(chain.validTo) / 1000);
    t.is(sample(text, 'meshvm_expiry_timestamp_seconds{resource="file[/etc/certs/key.pem]",what="certificate"}'), undefined, 'a key is no certificate');
    const finished = JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8')).finishedAt;
    t.is(sample(text, 'meshvm_last_run_timestamp_seconds'), Date.parse(finished) / 1000);
    t.is(sample(text, 'meshvm_last_success_timestamp_seconds'), Date.parse(finished) / 1000);

    // plan writes nothing, metrics included
    const before = await snapshot(root);
    t.is((await meshvm(['plan', DEMO, '--root', root])).exitCode, 0);
    t.deepEqual(await snapshot(root), before);

    t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
    text = await scrape();
    t.is(sample(text, 'meshvm_last_run_outcome{outcome="unchanged"}'), 1);
    t.is(sample(text, 'meshvm_last_run_drift_resources'), 0);

    await fs.writeFile(path.join(root, 'var/lib/istio/envoy/sidecar.env'), 'edited by hand\n');
    t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
    text = await scrape();
    t.is(sample(text, 'meshvm_last_run_drift_resources'), 1, 'the hand edit undone is drift');
    t.is(sample(text, 'meshvm_last_run_resources{status="changed"}'), 1);

    const changedPorts = await meshvm(['converge', DEMO, '--root', root, '--set', 'sidecar.inboundPorts=[8080]']);
    t.is(changedPorts.exitCode, 0, changedPorts.stderr);
    text = await scrape();
    t.is(sample(text, 'meshvm_last_run_resources{status="changed"}'), 1);
    t.is(sample(text, 'meshvm_last_run_drift_resources'), 0, 'a changed declaration is not drift');
  },
);

(nodeExporter ? test : test.skip)('a failed converge says so and keeps the time of the last success', async (t) => {
  const root = await scratchRoot(t);
  const dir = path.join(root, 'metrics');
  await fs.mkdir(dir);
  t.is((await meshvm(['converge', DEMO, '--root', root, '--textfile-dir', '/metrics'])).exitCode, 0);
  const succeeded = Date.parse(JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8')).finishedAt) / 1000;
  // a directory where sidecar.env must go: that resource fails
  await fs.rm(path.join(root, 'var/lib/istio/envoy/sidecar.env'));
  await fs.mkdir(path.join(root, 'var/lib/istio/envoy/sidecar.env'));
  const failed = await meshvm(['converge', DEMO, '--root', root, '--textfile-dir', '/metrics']);
  t.is(failed.exitCode, 1);
  const scrape = await startNodeExporter(t, dir);
  const text = await scrape();
  t.is(sample(text, 'node_textfile_scrape_error'), 0);
  t.is(sample(text, 'meshvm_last_run_success'), 0);
  t.is(sample(text, 'meshvm_last_run_outcome{outcome="failed"}'), 1);
  t.is(sample(text, 'meshvm_last_run_resources{status="failed"}'), 1);
  t.is(sample(text, 'meshvm_last_success_timestamp_seconds'), succeeded);
});

(nodeExporter ? test : test.skip)('a converge that fails while planning is a failed run in the metrics too, and keeps the drift baseline', async (t) => {
  const root = await scratchRoot(t);
  const dir = path.join(root, TEXTFILE_DIR);
  await fs.mkdir(dir, { recursive: true });
  t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
  const baseline = JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/status.json'), 'utf8'));
  t.is((await fs.stat(path.join(root, 'var/lib/meshvm/status.json'))).mode & 0o777, 0o600, 'digests of specs (secrets in them) are root-only');
  // a --set the runlist refuses (an IP that is none): the run stops before any resource is read
  const bad = await meshvm(['converge', DEMO, '--root', root, '--set', 'dns.clusterDns=10.0.0.300']);
  t.is(bad.exitCode, 1);
  const scrape = await startNodeExporter(t, dir);
  const text = await scrape();
  t.is(sample(text, 'meshvm_last_run_success'), 0);
  t.is(sample(text, 'meshvm_last_run_outcome{outcome="failed"}'), 1);
  t.is(sample(text, 'meshvm_info{runlist="demo",version="0.1.0"}'), 1, 'labelled with the runlist name as a success is');
  t.deepEqual(JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/status.json'), 'utf8')).digests, baseline.digests);
  // the baseline still tells drift from a new declaration
  await fs.writeFile(path.join(root, 'var/lib/istio/envoy/sidecar.env'), 'edited by hand\n');
  t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
  t.is(sample(await scrape(), 'meshvm_last_run_drift_resources'), 1);
});

test('an offboarded machine leaves no metrics behind (its alert would fire) and no drift baseline', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, TEXTFILE_DIR), { recursive: true });
  t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
  const prom = path.join(root, TEXTFILE_DIR, 'meshvm.prom');
  t.truthy(await fs.stat(prom));
  const off = await meshvm(['offboard', DEMO, '--root', root]);
  t.is(off.exitCode, 0, off.stderr);
  t.is(await fs.stat(prom).catch(() => undefined), undefined);
  t.is(await fs.stat(path.join(root, 'var/lib/meshvm/status.json')).catch(() => undefined), undefined);
});

test('no node_exporter directory and no flag: no metrics file, and the run is not the worse for it', async (t) => {
  const root = await scratchRoot(t);
  const run = await meshvm(['converge', DEMO, '--root', root]);
  t.is(run.exitCode, 0, run.stderr);
  t.notRegex(run.stderr + run.stdout, /status/);
  t.false(Object.keys(await snapshot(root)).some((p) => p.endsWith('.prom')));
});

(promtool ? test : test.skip)('the rendered metrics pass promtool check metrics, label values escaped', async (t) => {
  const text = renderMetrics({
    meshvm: '0.1.0',
    runlist: 'a "quoted"\\runlist\nwith a newline',
    finishedAt: new Date('2026-12-01T10:00:00Z'),
    seconds: 0.25,
    outcome: 'unchanged',
    lastSuccessAt: new Date('2026-12-01T10:00:00Z'),
    resources: { total: 9, changed: 0, failed: 0, skipped: 0 },
    drift: [],
    expiries: [{ ref: 'file[/etc/certs/root-cert.pem]', what: 'certificate', at: new Date('2036-01-01T00:00:00Z') }],
    apiCalls: { kubernetes: 2 },
  });
  t.true(text.includes('meshvm_info{version="0.1.0",runlist="a \\"quoted\\"\\\\runlist\\nwith a newline"} 1'));
  const lint = await execa('promtool', ['check', 'metrics'], { input: text, reject: false });
  t.is(lint.exitCode, 0, lint.stdout + lint.stderr);
});

(promtool ? test : test.skip)('the example alert rules are valid and their unit tests pass (promtool)', async (t) => {
  const cwd = path.join(PROJECT, 'examples/prometheus');
  const check = await execa('promtool', ['check', 'rules', 'meshvm-alerts.yaml'], { cwd, reject: false });
  t.is(check.exitCode, 0, check.stdout + check.stderr);
  t.regex(check.stdout, /SUCCESS: 5 rules found/);
  const unit = await execa('promtool', ['test', 'rules', 'meshvm-alerts.test.yaml'], { cwd, reject: false });
  t.is(unit.exitCode, 0, unit.stdout + unit.stderr);
});
