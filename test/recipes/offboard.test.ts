// meshvm offboard on scratch roots: each recipe's undo takes the root back to the tree it had before the converge (file
// hashes, modes, owners, enabled units), plan --offboard writes nothing, a second offboard changes nothing, and a root
// meshvm never converged keeps everything that is not provably meshvm's, saying what it found.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { meshvm, PROJECT, scratchRoot, seed, snapshot, writeRunlist, type Snapshot } from '../helpers/scratch.ts';

const DEMO = path.join(PROJECT, 'runlists/demo.yaml');

/** What a machine has before meshvm: its accounts (and the shadow tools' backups of them), its hosts file. */
async function machine(t: ExecutionContext): Promise<string> {
  const root = await scratchRoot(t);
  const accounts = {
    'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n',
    'etc/group': 'root:x:0:\n',
    'etc/shadow': 'root:*:19000::::::\n',
    'etc/gshadow': 'root:*::\n',
  };
  await seed(root, {
    ...accounts,
    ...Object.fromEntries(Object.entries(accounts).map(([file, text]) => [`${file}-`, text])),
    'etc/hosts': '127.0.0.1 localhost\n::1 localhost ip6-localhost\n',
  });
  await fs.chmod(path.join(root, 'etc/shadow'), 0o640);
  return root;
}

/**
 * What may differ: meshvm's log of the run (last-run.json, in its state directory) and its backups of the files it replaced
 * (its log of what it changed), and the shadow tools' backup copies of the account files (/etc/passwd- ..., which useradd
 * and userdel write before each change, as on any machine).
 */
const LOGS = /^(var\/|var\/lib\/|var\/lib\/meshvm\/|var\/lib\/meshvm\/last-run\.json|var\/lib\/meshvm\/backup\/.*|etc\/(passwd|group|shadow|gshadow)-)$/;
const allowed = (snap: Snapshot) => Object.fromEntries(Object.entries(snap).filter(([p]) => !LOGS.test(p)));

const json = (stdout: string) =>
  JSON.parse(stdout) as { outcome: string; offboard?: boolean; notes?: string[]; summary: { changed: number }; resources: { ref: string; status: string }[] };

test('the demo offboarded with --purge: the root is as it was, byte for byte; plan --offboard wrote nothing; a second offboard changes nothing', async (t) => {
  const root = await machine(t);
  const before = await snapshot(root);
  const converged = await meshvm(['converge', DEMO, '--root', root]);
  t.is(converged.exitCode, 0, converged.stderr);
  t.true(Object.keys(await snapshot(root)).includes('var/lib/istio/envoy/cluster.env'));

  const joined = await snapshot(root);
  const plan = await meshvm(['plan', '--offboard', '--purge', DEMO, '--root', root, '--json', '--detailed-exitcode']);
  t.is(plan.exitCode, 2, plan.stderr);
  t.is(json(plan.stdout).outcome, 'would-change');
  t.true(json(plan.stdout).offboard);
  t.deepEqual(await snapshot(root), joined, 'plan --offboard wrote nothing');

  const off = await meshvm(['offboard', '--purge', DEMO, '--root', root, '--json']);
  t.is(off.exitCode, 0, off.stderr);
  const report = json(off.stdout);
  t.is(report.outcome, 'changed');
  t.deepEqual(report.notes, []);
  t.deepEqual(
    report.resources.filter((r) => r.status === 'changed').map((r) => r.ref),
    [
      'file[/etc/certs/root-cert.pem]',
      'file[/etc/certs/cert-chain.pem]',
      'file[/etc/certs/key.pem]',
      'directory[/etc/certs]',
      'file[/var/lib/istio/envoy/sidecar.env]',
      'file[/etc/dnsmasq.d/kubedns]',
      'directory[/etc/dnsmasq.d]',
      'file[/var/lib/istio/envoy/cluster.env]',
      'directory[/var/lib/istio/envoy]',
      'user[istio-proxy]',
      'group[istio-proxy]',
      'directory[/var/lib/istio]',
    ],
    'last recipe first',
  );
  t.deepEqual(allowed(await snapshot(root)), allowed(before));
  t.true(JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8')).offboard, 'the report says it was an offboard');

  const again = await meshvm(['offboard', '--purge', DEMO, '--root', root, '--json']);
  t.is(again.exitCode, 0, again.stderr);
  t.is(json(again.stdout).outcome, 'unchanged');
  t.is(json(again.stdout).summary.changed, 0);
});

test('without --purge the account stays, with the files meshvm wrote gone', async (t) => {
  const root = await machine(t);
  t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
  const off = await meshvm(['offboard', DEMO, '--root', root]);
  t.is(off.exitCode, 0, off.stderr);
  t.regex(off.stdout, /^meshvm offboard .*demo\.yaml: \d+ resources/m);
  t.regex(off.stdout, /^offboarded: /m);
  t.regex(await fs.readFile(path.join(root, 'etc/passwd'), 'utf8'), /^istio-proxy:/m);
  const left = Object.keys(await snapshot(root)).filter((p) => p.includes('istio') || p.includes('certs') || p.includes('dnsmasq'));
  t.deepEqual(left.sort(), ['etc/certs/', 'etc/dnsmasq.d/', 'var/lib/istio/', 'var/lib/istio/envoy/']);
});

test('a root meshvm never converged: files it did not write are left and named, nothing changes', async (t) => {
  const root = await machine(t);
  // what an operator copied by hand, as Istio's VM guide has them do
  await seed(root, {
    'var/lib/istio/envoy/cluster.env': 'ISTIO_SERVICE_CIDR=10.63.240.0/20\n',
    'etc/certs/root-cert.pem': '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
  });
  const before = await snapshot(root);
  const off = await meshvm(['offboard', '--purge', DEMO, '--root', root, '--json']);
  t.is(off.exitCode, 0, off.stderr);
  const report = json(off.stdout);
  t.deepEqual(report.notes, [
    'left /etc/certs/root-cert.pem: meshvm keeps no record of writing it (not written by meshvm, or by a meshvm older than offboarding)',
    'left /var/lib/istio/envoy/cluster.env: meshvm keeps no record of writing it (not written by meshvm, or by a meshvm older than offboarding)',
  ]);
  t.regex(off.stderr, /offboard: left \/etc\/certs\/root-cert\.pem/);
  t.is(report.summary.changed, 0);
  t.deepEqual(allowed(await snapshot(root)), allowed(before));
});

test('a file edited since meshvm wrote it is left, and said so; the others go', async (t) => {
  const root = await machine(t);
  t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
  await fs.appendFile(path.join(root, 'var/lib/istio/envoy/cluster.env'), 'EDITED_BY_HAND=1\n');
  const off = await meshvm(['offboard', DEMO, '--root', root, '--json']);
  t.is(off.exitCode, 0, off.stderr);
  t.deepEqual(json(off.stdout).notes, ['left /var/lib/istio/envoy/cluster.env: its content changed since meshvm wrote it']);
  t.regex(await fs.readFile(path.join(root, 'var/lib/istio/envoy/cluster.env'), 'utf8'), /EDITED_BY_HAND/);
  await t.throwsAsync(fs.stat(path.join(root, 'var/lib/istio/envoy/sidecar.env')));
});

test("converge-timer: meshvm's units disabled, their files removed; the enable links gone with them", async (t) => {
  const root = await machine(t);
  const dir = await scratchRoot(t, 'meshvm-runlist-');
  const file = await writeRunlist(
    dir,
    'timer.yaml',
    JSON.stringify({ name: 'timer', attributes: { flow: 'istiod' }, recipes: [{ recipe: 'converge-timer' }] }),
  );
  const before = await snapshot(root);
  t.is((await meshvm(['converge', file, '--root', root])).exitCode, 0);
  t.truthy(await fs.readlink(path.join(root, 'etc/systemd/system/timers.target.wants/meshvm.timer')));
  const off = await meshvm(['offboard', file, '--root', root, '--json']);
  t.is(off.exitCode, 0, off.stderr);
  t.deepEqual(
    json(off.stdout).resources.map((r) => `${r.ref} ${r.status}`),
    [
      'service[meshvm.timer] changed',
      'service[meshvm-boot.service] changed',
      'systemd_unit[/etc/systemd/system/meshvm.service] changed',
      'systemd_unit[/etc/systemd/system/meshvm.timer] changed',
      'systemd_unit[/etc/systemd/system/meshvm-boot.service] changed',
      // systemd's stamp of the timer's last run: none here, no systemd ran this root
      'file[/var/lib/systemd/timers/stamp-meshvm.timer] unchanged',
    ],
  );
  // systemctl --root leaves the directories it made for the links; an empty wants directory enables nothing
  const left = Object.keys(allowed(await snapshot(root))).filter((p) => !(p in before));
  t.deepEqual(
    left,
    left.filter((p) => p.endsWith('/')),
    `only empty directories are left: ${left.join(', ')}`,
  );
  const again = await meshvm(['offboard', file, '--root', root, '--json']);
  t.is(json(again.stdout).summary.changed, 0);
});

test('the command line: --offboard is plan’s, --purge is offboard’s, offboard refuses a root that does not exist', async (t) => {
  const root = await machine(t);
  const converge = await meshvm(['converge', '--offboard', DEMO, '--root', root]);
  t.is(converge.exitCode, 1);
  t.regex(converge.stderr, /--offboard: only plan takes it \(meshvm plan --offboard RUNLIST; to offboard: meshvm offboard RUNLIST\)/);
  const purge = await meshvm(['converge', '--purge', DEMO, '--root', root]);
  t.is(purge.exitCode, 1);
  t.regex(purge.stderr, /--purge: only offboard and plan --offboard take it/);
  const missing = await meshvm(['offboard', DEMO, '--root', path.join(root, 'nope')]);
  t.is(missing.exitCode, 1);
  t.regex(missing.stderr, /no such directory \(offboard does not create it: there is nothing to take out of the mesh\)/);
  t.false(
    Object.keys(await snapshot(root)).some((p) => p.startsWith('var/lib/meshvm')),
    'nothing written',
  );
  const help = await meshvm(['--help']);
  t.regex(help.stdout, /meshvm offboard RUNLIST \[options\]/);
  t.regex(help.stdout, /--purge/);
});

test('files: the blocks, the files holding the content the runlist gives them, and with --purge the directories, go; an edited file stays', async (t) => {
  const root = await machine(t);
  const dir = await scratchRoot(t, 'meshvm-runlist-');
  const file = await writeRunlist(
    dir,
    'files.yaml',
    JSON.stringify({
      name: 'files',
      recipes: [
        {
          recipe: 'files',
          attributes: {
            directories: [{ path: '/srv/app' }, { path: '/srv/app/conf' }],
            files: [
              { path: '/srv/app/conf/app.env', content: 'PORT=9080\n' },
              { path: '/srv/app/conf/extra.env', content: 'DEBUG=0\n' },
            ],
            blocks: [{ path: '/etc/hosts', name: 'app', lines: ['10.0.0.9 db.internal'] }],
          },
        },
      ],
    }),
  );
  const before = await snapshot(root);
  t.is((await meshvm(['converge', file, '--root', root])).exitCode, 0);
  await fs.writeFile(path.join(root, 'srv/app/conf/extra.env'), 'DEBUG=1\n');
  const off = await meshvm(['offboard', '--purge', file, '--root', root, '--json']);
  t.is(off.exitCode, 0, off.stderr);
  t.deepEqual(json(off.stdout).notes, [
    'left /srv/app/conf/extra.env: meshvm keeps no record of writing it (not written by meshvm, or by a meshvm older than offboarding)',
  ]);
  t.is(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'), '127.0.0.1 localhost\n::1 localhost ip6-localhost\n', '/etc/hosts byte for byte');
  t.is(await fs.readFile(path.join(root, 'srv/app/conf/extra.env'), 'utf8'), 'DEBUG=1\n');
  await fs.rm(path.join(root, 'srv'), { recursive: true });
  t.deepEqual(allowed(await snapshot(root)), allowed(before));
});

test('a root without any report of meshvm: services are left as they are, and the note says why', async (t) => {
  const root = await machine(t);
  const dir = await scratchRoot(t, 'meshvm-runlist-');
  const file = await writeRunlist(
    dir,
    'services.yaml',
    JSON.stringify({ name: 'services', attributes: { flow: 'istiod' }, recipes: [{ recipe: 'sidecar-services' }] }),
  );
  const off = await meshvm(['offboard', file, '--root', root, '--json']);
  t.is(off.exitCode, 0, off.stderr);
  const report = json(off.stdout);
  t.deepEqual(report.resources, []);
  t.deepEqual(report.notes, [
    "found no sign that meshvm converged this machine (no report in /var/lib/meshvm/last-run.json, no record of files it wrote in /var/lib/meshvm/written): removing only what carries meshvm's marker or its ownership label, leaving services as they are",
  ]);
  // the last report a converge's (the machine meshvm joined), or a failed offboard's (part of the way out): istio is stopped
  // and disabled; after an offboard that finished there is nothing to stop, and nothing to say
  for (const [last, refs] of [
    [{ outcome: 'changed' }, ['service[istio.service]']],
    [{ outcome: 'failed', offboard: true }, ['service[istio.service]']],
    [{ outcome: 'changed', offboard: true }, []],
  ] as const) {
    await seed(root, { 'var/lib/meshvm/last-run.json': JSON.stringify(last) });
    const again = json((await meshvm(['offboard', file, '--root', root, '--json'])).stdout);
    t.deepEqual(again.notes, [], JSON.stringify(last));
    t.deepEqual(
      again.resources.map((r) => r.ref),
      [...refs],
      JSON.stringify(last),
    );
  }
});
