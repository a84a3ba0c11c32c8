// Offboarding a booted Debian 12 (systemd as PID 1) that meshvm joined to the mesh: the guest as it was before the converge
// (every file on its disk with mode, owner and content hash; its enabled units; its nat table; what its resolver answers)
// is what `meshvm offboard --purge` leaves, but for logs and caches; plan --offboard writes nothing; a second offboard
// changes nothing; the Kubernetes stand-in (standing for the cluster's API server) shows the WorkloadGroup meshvm made
// deleted, and the WorkloadEntry the istiod stand-in registered for the VM gone with the sidecar.
// The far side is the lab of test/e2e/lab.ts (Vault, the Kubernetes API, istiod and the artifact store as stand-ins);
// meshvm is the built executable, baked into the image; the runlist is the shipped istio-vm.
import test from 'ava';
import { bootBaked, e2eGate, ensureArtifact, labNodeYaml, run, sidecarReady, WORKLOAD, type MeshGuest } from './lab.ts';
import { until } from '../helpers/poll.ts';
import type { Guest } from '../helpers/guest/container.ts';

const ok = await e2eGate(test, 'offboarding');
const serial = ok ? test.serial : test.serial.skip;

const MESHVM = '/usr/local/bin/meshvm';
const RUNLIST = '/etc/meshvm/runlist.yaml';

/**
 * What may differ after the offboard, and why: logs and caches only. meshvm's own (the report of its last run, the backups
 * of the files it replaced: its log of what it changed); the account tools' backup copies of /etc/passwd and friends
 * (useradd and userdel write them before each change); apt's and dpkg's caches and logs; other timers' last-run stamps;
 * the stand-in sidecar unit's log of its starts (/var/lib/istio/starts, written by the test fixture's ExecStartPre, and
 * the directory that holds it).
 */
const LOGS_AND_CACHES = [
  /^\/var\/log\//,
  /^\/var\/cache\//,
  /^\/var\/lib\/meshvm(\/last-run\.json|\/backup(\/.*)?)?$/,
  /^\/etc\/(passwd|group|shadow|gshadow)-$/,
  /^\/var\/lib\/apt\/(lists|periodic)\//,
  /^\/var\/lib\/dpkg\/(status-old|lock.*|triggers\/Lock)$/,
  /^\/var\/lib\/systemd\/timers\/stamp-(?!meshvm)/,
  /^\/var\/lib\/istio(\/starts)?$/,
];

interface GuestState {
  files: Record<string, string>;
  units: string;
  nat: string;
  resolver: Record<string, string>;
}

/** Every file on the guest's disk (find -xdev: not /proc, /sys, /dev, /run or /tmp), its type, mode, owner, link target and sha256. */
async function guestState(g: Guest): Promise<GuestState> {
  const files: Record<string, string> = {};
  const listed = await run(g, ['sh', '-c', "find / -xdev -printf '%y %m %u:%g %p\\0%l\\0' | tr '\\n' ' '"]);
  const fields = listed.split('\0');
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const [type, mode, owner, ...rest] = fields[i]!.split(' ');
    files[rest.join(' ')] = `${type} ${mode} ${owner}${fields[i + 1] ? ` -> ${fields[i + 1]}` : ''}`;
  }
  // the baked-in executable (a 128 MiB bind mount of the host's file) is the same file before and after
  const hashes = await run(g, ['sh', '-c', 'find / -xdev -type f ! -path /usr/local/bin/meshvm -print0 | xargs -0 sha256sum'], 300_000);
  for (const line of hashes.split('\n').filter(Boolean)) {
    const [hash, ...name] = line.split('  ');
    files[name.join('  ')] += ` ${hash}`;
  }
  const units = await run(g, ['systemctl', 'list-unit-files', '--no-legend', '--no-pager', '--state=enabled,disabled,static,masked']);
  // the rules, without iptables-save's comments (which carry the time) and packet counters
  const nat = (await run(g, ['iptables-save', '-t', 'nat']))
    .replace(/^#.*$/gm, '')
    .replace(/\[\d+:\d+\]/g, '')
    .trim();
  const resolver: Record<string, string> = {};
  for (const name of ['istiod.istio-system.svc', 'example.org', 'reviews.vm-ns.svc.cluster.local']) {
    const r = await g.exec(['getent', 'ahosts', name]);
    resolver[name] = `exit ${r.exitCode}: ${r.stdout.trim()}`;
  }
  return { files, units, nat, resolver };
}

const outsideLogs = (files: Record<string, string>) => Object.fromEntries(Object.entries(files).filter(([p]) => !LOGS_AND_CACHES.some((re) => re.test(p))));

interface Report {
  outcome: string;
  offboard?: boolean;
  notes?: string[];
  summary: { changed: number; seconds: number };
  resources: { ref: string; status: string; changes: string[]; error?: string }[];
}

async function meshvm(g: Guest, args: string[]): Promise<Report> {
  const r = await g.exec([MESHVM, ...args, RUNLIST, '--json'], { timeoutMs: 300_000 });
  if (r.exitCode !== 0 && !(args.includes('--detailed-exitcode') && r.exitCode === 2))
    throw new Error(`meshvm ${args.join(' ')} failed (${r.exitCode}):\n${r.stderr}`);
  return JSON.parse(r.stdout) as Report;
}

let mg: MeshGuest | undefined;

if (ok) {
  test.before('boot a guest with meshvm in its image, its node file and runlist written', async (t) => {
    t.timeout(20 * 60_000, 'building the image and the artifact the first time');
    await ensureArtifact((line) => t.log(line));
    mg = await bootBaked({ log: (line) => t.log(line) });
    await mg.guest.writeFile('/etc/meshvm/node.yaml', labNodeYaml(mg), { mode: 0o600 });
    await mg.guest.writeFile(RUNLIST, await run(mg.guest, [MESHVM, 'runlist', 'istio-vm']));
  });
  test.after.always('stop the guest and its lab', async () => {
    await mg?.stop();
  });
}

serial('converge, then offboard --purge: the guest is as it was (files, units, nat rules, resolver answers); a second offboard changes nothing', async (t) => {
  t.timeout(10 * 60_000);
  const g = mg!.guest;
  const before = await guestState(g);

  // joined: istio running and registered, its nat rules in, istiod's name in /etc/hosts
  const converged = await meshvm(g, ['converge']);
  t.is(converged.outcome, 'changed');
  await sidecarReady(g);
  const entry = `${WORKLOAD.namespace}/${WORKLOAD.name}`;
  await until(async () => (await mg!.lab.stats()).workloadEntries.some((e) => e.name.startsWith(entry)), {
    what: 'istiod to register the VM',
    timeoutMs: 30_000,
    intervalMs: 200,
  });
  t.deepEqual((await mg!.lab.stats()).workloadGroups, [entry]);
  const joined = await guestState(g);
  t.regex(joined.nat, /^:ISTIO_OUTPUT /m);
  t.regex(joined.resolver['istiod.istio-system.svc']!, /^exit 0: 10\.150\.0\.6 /);
  t.regex(joined.units, /^meshvm\.timer +enabled/m);

  // plan --offboard: what it would do, nothing written
  const plan = await meshvm(g, ['plan', '--offboard', '--purge', '--detailed-exitcode']);
  t.is(plan.outcome, 'would-change');
  const planned = plan.resources.filter((r) => r.status === 'would-change').map((r) => r.ref);
  const after = await guestState(g);
  t.deepEqual(outsideLogs(after.files), outsideLogs(joined.files), 'plan --offboard wrote nothing');

  const off = await meshvm(g, ['offboard', '--purge']);
  t.is(off.outcome, 'changed', JSON.stringify(off.resources.filter((r) => r.error)));
  t.true(off.offboard);
  t.deepEqual(off.notes, [], 'everything it found was meshvm’s');
  const changed = off.resources.filter((r) => r.status === 'changed').map((r) => r.ref);
  // what the plan could not know: istio's stop removed the chains (its ExecStopPost), userdel took the group with the user,
  // and directories were empty once their files had gone
  const known = new Set(['execute[remove leftover ISTIO iptables chains]', 'group[istio-proxy]']);
  t.deepEqual(
    planned.filter((ref) => !changed.includes(ref) && !known.has(ref)),
    [],
    'offboard did what its plan said',
  );
  t.deepEqual(
    changed.filter((ref) => !planned.includes(ref) && !ref.startsWith('directory[')),
    [],
    'and nothing it did not say but emptied directories',
  );
  t.log(
    `converge ${converged.summary.seconds} s (${converged.summary.changed} changed); offboard ${off.summary.seconds} s (${off.summary.changed} changed): ${changed.join(', ')}`,
  );

  // the cluster: meshvm's WorkloadGroup deleted; istiod's entry for the VM gone once the stopped sidecar's grace period ended
  t.deepEqual((await mg!.lab.stats()).workloadGroups, []);
  await until(async () => !(await mg!.lab.stats()).workloadEntries.some((e) => e.name.startsWith(entry)), {
    what: 'the WorkloadEntry to go',
    timeoutMs: 60_000,
    intervalMs: 500,
  });

  const offboarded = await guestState(g);
  t.deepEqual(offboarded.units, before.units, 'enabled units as before');
  t.deepEqual(offboarded.nat, before.nat, 'nat table as before');
  t.deepEqual(offboarded.resolver, before.resolver, 'resolver answers as before');
  t.deepEqual(outsideLogs(offboarded.files), outsideLogs(before.files), 'files as before, but for logs and caches');
  t.log(`${Object.keys(outsideLogs(before.files)).length} files compared (of ${Object.keys(before.files).length} on the disk)`);
  t.is((await g.exec(['id', 'istio-proxy'])).exitCode, 1, 'the account purged');
  t.is((await g.exec(['dpkg-query', '-W', 'istio-sidecar'])).exitCode, 1, 'the package purged');

  const again = await meshvm(g, ['offboard', '--purge']);
  t.is(again.outcome, 'unchanged');
  t.is(again.summary.changed, 0);
  t.deepEqual(again.notes, []);
});

serial('dns.mode dnsmasq: offboard puts /etc/resolv.conf back byte for byte, turns dnsmasq off as meshvm found it, and the guest is as it was', async (t) => {
  t.timeout(10 * 60_000);
  const g = mg!.guest;
  // the image's dnsmasq is installed and disabled (test/helpers/guest/rootfs.ts); the resolver is the DHCP nameserver's file
  await mg!.guest.writeFile('/etc/meshvm/node.yaml', `${labNodeYaml(mg!)}  dns: { mode: dnsmasq, routesToClusterIps: true }\n  dnsCapture: false\n`, {
    mode: 0o600,
  });
  const resolvConf = await run(g, ['cat', '/etc/resolv.conf']);
  const before = await guestState(g);
  t.regex(before.units, /^dnsmasq\.service +disabled/m);

  const converged = await meshvm(g, ['converge']);
  t.is(converged.outcome, 'changed');
  t.regex(await run(g, ['cat', '/etc/resolv.conf']), /^nameserver 127\.0\.0\.1$/m, 'the resolver asks dnsmasq');
  t.is((await run(g, ['systemctl', 'is-enabled', 'dnsmasq.service'])).trim(), 'enabled');
  t.regex((await g.exec(['getent', 'ahosts', 'istiod.istio-system.svc'])).stdout, /^10\.150\.0\.6 /);

  const off = await meshvm(g, ['offboard', '--purge']);
  t.is(off.outcome, 'changed', JSON.stringify(off.resources.filter((r) => r.error)));
  t.deepEqual(off.notes, []);
  const resolver = off.resources.find((r) => r.ref === 'resolv_conf[meshvm]');
  t.is(resolver?.status, 'changed');
  t.log(`dnsmasq mode: converge ${converged.summary.seconds} s, offboard ${off.summary.seconds} s; the resolver's undo: ${resolver?.changes.join(' | ')}`);
  await until(async () => !(await mg!.lab.stats()).workloadEntries.some((e) => e.name.startsWith(`${WORKLOAD.namespace}/${WORKLOAD.name}`)), {
    what: 'the WorkloadEntry to go',
    timeoutMs: 60_000,
    intervalMs: 500,
  });

  t.is(await run(g, ['cat', '/etc/resolv.conf']), resolvConf, '/etc/resolv.conf byte for byte');
  const after = await guestState(g);
  t.deepEqual(after.units, before.units, 'dnsmasq disabled again, as meshvm found it');
  t.is((await g.exec(['systemctl', 'is-active', 'dnsmasq.service'])).stdout.trim(), 'inactive');
  t.deepEqual(after.nat, before.nat);
  t.deepEqual(after.resolver, before.resolver);
  t.deepEqual(outsideLogs(after.files), outsideLogs(before.files));
  const again = await meshvm(g, ['offboard', '--purge']);
  t.is(again.summary.changed, 0);
});
