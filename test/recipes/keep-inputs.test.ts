// cluster.keepInputs: the slow-changing cluster inputs of the istiod flow (mesh config, injector values, the network label, the
// gateway's addresses) kept between runs under /run/meshvm (0600) with the time they were read, against the Kubernetes API
// (v1.33) and Vault (API v1) stand-ins; every request counted from the stand-ins' logs.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { LAB_WORKLOAD, AUTO_REGISTRATION_RULES, MESH_RULES, SCRATCH_ISTIO_VM_RECIPES, startMeshLab, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

const INPUTS_DIR = 'run/meshvm/cluster-inputs';

/** What a no-op converge still reads: the VM's own WorkloadGroup, and the root certificate (it rotates). */
const EVERY_RUN = ['GET /apis/networking.istio.io/v1/namespaces/vm-ns/workloadgroups/reviews-vm', 'GET /api/v1/namespaces/vm-ns/configmaps/istio-ca-root-cert'];
/** What is kept: the mesh config, the injector's values, the system namespace's network label, the gateway's address. */
const KEPT = [
  'GET /api/v1/namespaces/istio-system',
  'GET /api/v1/namespaces/istio-system/configmaps/istio',
  'GET /api/v1/namespaces/istio-system/configmaps/istio-sidecar-injector',
  'GET /api/v1/namespaces/istio-system/services',
];

const runlist = (lab: MeshLab, cluster: Record<string, unknown> = {}) =>
  JSON.stringify({
    name: 'keep-inputs',
    attributes: {
      flow: 'istiod',
      systemNamespace: 'istio-system',
      workload: LAB_WORKLOAD,
      cluster: { ...lab.cluster, ...cluster },
    },
    recipes: [...SCRATCH_ISTIO_VM_RECIPES],
  });

interface Report {
  outcome: string;
  apiCalls: Record<string, number>;
  summary: { changed: number };
}

async function setup(t: Parameters<typeof scratchRoot>[0], cluster: Record<string, unknown> = {}) {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root, { rules: [...MESH_RULES, ...AUTO_REGISTRATION_RULES] });
  const file = await writeRunlist(lab.dir, 'keep-inputs.yaml', runlist(lab, cluster));
  /** Runs meshvm; the Kubernetes reads and Vault requests it made, sorted; what it printed on stderr. */
  const run = async (args: string[], expectExit = 0) => {
    const kube = lab.kube.calls.length;
    const vault = lab.vault.calls.length;
    const result = await meshvm([...args, '--root', root, '--json']);
    t.is(result.exitCode, expectExit, result.stderr);
    const output = `${result.stdout}${result.stderr}`;
    for (const secret of ['scoped-token', 'secret-id-lab', 'role-id-lab']) t.false(output.includes(secret), `${secret} never in the output`);
    return {
      report: JSON.parse(result.stdout) as Report,
      stderr: result.stderr,
      reads: lab.kube.calls
        .slice(kube)
        .filter((c) => c.method === 'GET')
        .map((c) => `${c.method} ${c.path}`)
        .sort(),
      writes: lab.kube.calls.slice(kube).filter((c) => c.method !== 'GET').length,
      vault: lab.vault.calls.slice(vault).map((c) => `${c.method} ${c.path}`),
    };
  };
  const keptFiles = async () => (await fs.readdir(path.join(root, INPUTS_DIR)).catch(() => [] as string[])).filter((n) => n.endsWith('.json'));
  const keptFile = async () => path.join(root, INPUTS_DIR, (await keptFiles())[0]!);
  /** Makes every kept input older (as if the run that read them was `seconds` ago). */
  const age = async (seconds: number) => {
    const file = await keptFile();
    const kept = JSON.parse(await fs.readFile(file, 'utf8'));
    for (const entry of Object.values(kept.inputs) as { readAt: number }[]) entry.readAt -= seconds * 1000;
    await fs.writeFile(file, JSON.stringify(kept), { mode: 0o600 });
  };
  return { root, lab, file, run, keptFiles, keptFile, age };
}

const sorted = (...lists: string[][]) => lists.flat().sort();

test('a no-op converge of the istiod flow makes 0 Vault calls and exactly 2 Kubernetes reads; plan reads the same and writes nothing', async (t) => {
  const { root, file, run, keptFiles, keptFile } = await setup(t);
  const first = await run(['converge', file]);
  t.deepEqual(first.reads, sorted(EVERY_RUN, KEPT), 'the first converge reads everything');
  t.deepEqual(first.vault, ['POST /v1/auth/approle/login', 'GET /v1/secret/data/meshvm/cluster-a'], 'login and one read, kept');
  t.is((await keptFiles()).length, 1);
  t.is((await fs.stat(await keptFile())).mode & 0o777, 0o600);
  t.is((await fs.stat(path.join(root, INPUTS_DIR))).mode & 0o777, 0o700);
  const kept = await fs.readFile(await keptFile(), 'utf8');
  t.false(kept.includes('scoped-token'), 'no token among the kept inputs');

  const noop = await run(['converge', file]);
  t.is(noop.report.summary.changed, 0);
  t.deepEqual(noop.reads, sorted(EVERY_RUN), 'the VM own object and the root certificate only');
  t.is(noop.writes, 0);
  t.deepEqual(noop.vault, []);
  t.is(noop.report.apiCalls.kubernetes, 2);
  t.is(noop.report.apiCalls.vault ?? 0, 0);

  const mtime = (await fs.stat(await keptFile())).mtimeMs;
  const plan = await run(['plan', file]);
  t.is(plan.report.outcome, 'unchanged');
  t.deepEqual(plan.reads, sorted(EVERY_RUN));
  t.deepEqual(plan.vault, []);
  t.is((await fs.stat(await keptFile())).mtimeMs, mtime, 'plan wrote nothing');
  t.is(await fs.readFile(await keptFile(), 'utf8'), kept);
});

test('a change to a kept input (the mesh config) is picked up after keepInputs, or at once with --refresh; verify reads fresh', async (t) => {
  const { root, lab, file, run, age } = await setup(t);
  await run(['converge', file]);
  const clusterEnv = () => fs.readFile(path.join(root, 'var/lib/istio/envoy/cluster.env'), 'utf8');
  t.regex(await clusterEnv(), /^TRUST_DOMAIN='?cluster\.local'?$/m);

  lab.kube.objects.installIstio({ trustDomain: 'example.org' });
  const stillKept = await run(['converge', file]);
  t.is(stillKept.report.summary.changed, 0, 'within keepInputs (1h by default) the kept mesh config is used');
  t.deepEqual(stillKept.reads, sorted(EVERY_RUN));

  await age(3601);
  const after = await run(['converge', file]);
  t.deepEqual(after.reads, sorted(EVERY_RUN, KEPT), 'older than keepInputs: the kept ones are read again');
  t.regex(await clusterEnv(), /^TRUST_DOMAIN='?example\.org'?$/m);
  t.true(after.report.summary.changed > 0);
  t.deepEqual((await run(['converge', file])).reads, sorted(EVERY_RUN), 'and kept again');

  lab.kube.objects.installIstio({ trustDomain: 'cluster.local' });
  const planned = await run(['plan', file, '--refresh']);
  t.is(planned.report.outcome, 'would-change', 'plan --refresh sees the change');
  t.deepEqual(planned.reads, sorted(EVERY_RUN, KEPT));
  const refreshed = await run(['converge', file, '--refresh']);
  t.deepEqual(refreshed.reads, sorted(EVERY_RUN, KEPT), '--refresh reads everything');
  t.regex(await clusterEnv(), /^TRUST_DOMAIN='?cluster\.local'?$/m);
  t.deepEqual((await run(['converge', file])).reads, sorted(EVERY_RUN), 'what --refresh read is kept');

  // verify checks what is true now: it reads the kept inputs fresh (its checks cannot all pass in a scratch root)
  const kube = lab.kube.calls.length;
  await meshvm(['verify', file, '--root', root, '--json']);
  const verifyReads = lab.kube.calls.slice(kube).map((c) => `${c.method} ${c.path}`);
  for (const read of KEPT) t.true(verifyReads.includes(read), `verify reads ${read}`);
  const again = lab.kube.calls.length;
  await meshvm(['verify', file, '--root', root, '--json', '--refresh']);
  t.deepEqual(
    lab.kube.calls.slice(again).map((c) => `${c.method} ${c.path}`),
    verifyReads,
    'verify --refresh: the same',
  );
});

test('a kept file that is corrupt, foreign-owned or others can write is ignored with a warning and read again; nothing secret printed', async (t) => {
  const { file, run, keptFile } = await setup(t);
  await run(['converge', file]);
  const kept = await keptFile();
  const good = await fs.readFile(kept, 'utf8');

  const cases: [string, () => Promise<void>, RegExp][] = [
    ['not JSON', () => fs.writeFile(kept, '{"format":1,"inputs":{', { mode: 0o600 }), /ignoring the kept cluster inputs .*: it is not JSON/],
    ['others can write it', () => fs.writeFile(kept, good).then(() => fs.chmod(kept, 0o666)), /ignoring the kept cluster inputs .*: its mode is 0666/],
    ['another account owns it', () => fs.writeFile(kept, good, { mode: 0o600 }).then(() => fs.chown(kept, 4242, 4242)), /owned by uid 4242/],
    [
      'a kept value that is not a mesh config',
      async () => {
        const tree = JSON.parse(good);
        const key = Object.keys(tree.inputs).find((k) => k.startsWith('mesh-config:'))!;
        tree.inputs[key].value = 'trustDomain: "not a trust domain!"\n';
        await fs.rm(kept);
        await fs.writeFile(kept, JSON.stringify(tree), { mode: 0o600 });
      },
      /ignoring the kept cluster input "mesh-config:istio-system:" .*trustDomain/,
    ],
  ];
  for (const [what, spoil, warning] of cases) {
    await spoil();
    const again = await run(['converge', file]);
    t.regex(again.stderr, warning, what);
    t.is(again.report.outcome, 'unchanged', what);
    t.true(
      KEPT.some((read) => again.reads.includes(read)),
      `${what}: read again from the cluster`,
    );
    const stat = await fs.stat(kept);
    t.is(stat.uid, process.getuid!(), `${what}: written again by meshvm`);
    t.is(stat.mode & 0o777, 0o600);
    const next = await run(['converge', file]);
    t.deepEqual(next.reads, sorted(EVERY_RUN), `${what}: then kept again`);
    t.notRegex(next.stderr, /ignoring/);
  }
});

test('keepInputs: 0 reads every input every run and keeps none; another cluster configuration has its own kept file', async (t) => {
  const { file, run, keptFiles, lab } = await setup(t, { keepInputs: 0 });
  await run(['converge', file]);
  t.deepEqual((await run(['converge', file])).reads, sorted(EVERY_RUN, KEPT));
  t.deepEqual(await keptFiles(), []);

  const other = await writeRunlist(
    lab.dir,
    'other.yaml',
    runlist(lab, { keepInputs: '30m', vault: { ...(lab.cluster['vault'] as object), timeoutSeconds: 20 } }),
  );
  t.deepEqual((await run(['converge', other])).reads, sorted(EVERY_RUN, KEPT), 'a new configuration reads everything');
  t.deepEqual((await run(['converge', other])).reads, sorted(EVERY_RUN));
  t.is((await keptFiles()).length, 1);
});

test('a bad keepInputs is refused with the attribute named, before anything is read', async (t) => {
  const { file, run, lab } = await setup(t, { keepInputs: 'an hour' });
  const kube = lab.kube.calls.length;
  const result = await meshvm(['plan', file, '--root', await scratchRoot(t), '--json']);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /keepInputs.*a duration such as '1h'/);
  t.is(lab.kube.calls.length, kube);
  t.truthy(run);
});

test('offboard forgets the kept inputs', async (t) => {
  const { file, run, keptFiles, root } = await setup(t);
  await run(['converge', file]);
  t.is((await keptFiles()).length, 1);
  const result = await meshvm(['offboard', file, '--root', root, '--json']);
  t.is(result.exitCode, 0, result.stderr);
  t.deepEqual(await keptFiles(), []);
  t.is(await fs.stat(path.join(root, INPUTS_DIR)).catch(() => undefined), undefined);
});

test('a /run/meshvm link that leads out of the root is not written through: the run converges, keeps nothing, and says so', async (t) => {
  const { root, file, run, lab } = await setup(t);
  const outside = await scratchRoot(t, 'meshvm-outside-');
  await fs.mkdir(path.join(root, 'run'), { recursive: true });
  await fs.symlink(outside, path.join(root, 'run/meshvm'));
  const first = await run(['converge', file]);
  t.is(first.report.outcome, 'changed');
  t.regex(first.stderr, /could not keep the cluster inputs read in this run: .*run\/meshvm/);
  t.notRegex(first.stderr, /could not forget/, 'no kept access there: nothing to forget');
  t.regex(first.stderr, /could not keep the cluster access in \/run\/meshvm\/cluster-access\/[0-9a-f]+\.json .*its Vault token is revoked/);
  t.deepEqual(await fs.readdir(outside), [], 'nothing written outside the root');
  t.true(
    [...lab.vault.state.tokens.values()].every((token) => token.revoked === true),
    'the login that could not be kept is revoked',
  );
  const again = await run(['converge', file]);
  t.is(again.report.outcome, 'unchanged');
  t.deepEqual(again.reads, sorted(EVERY_RUN, KEPT), 'nothing kept: everything read again');
  t.deepEqual(await fs.readdir(outside), []);
});
