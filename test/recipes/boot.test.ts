// The boot converge (meshvm-boot.service, declared by converge-timer): its unit as written, and in a booted Debian 12
// (systemd as PID 1) what systemd makes of it: ordered before istio, after the network, bounded; after a reboot the files
// that live on tmpfs are back before istio starts, istio is started once and never waited for (no deadlock with the
// converge it is ordered after); a converge that cannot finish holds istio no longer than the bound.
// No stand-ins: the input on tmpfs is a file of a recipe module (standing in for the istio-token, which test/e2e/boot.test.ts
// mints for real through the Vault and Kubernetes stand-ins); istio is a stub unit that records what it found when it started.
import test, { type ExecutionContext } from 'ava';
import { execa } from 'execa';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { bootContainer, canBootContainers, type Guest } from '../helpers/guest/container.ts';
import { ensureRootfs } from '../helpers/guest/rootfs.ts';
import { until } from '../helpers/poll.ts';
import { meshvm, PROJECT, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

const BOOT_UNIT = '/etc/systemd/system/meshvm-boot.service';

// decided before any test is declared (ava wants them all declared in the same tick)
const gate = await canBootContainers();
const guestTest = gate.ok ? test.serial : test.serial.skip;
if (!gate.ok) {
  const reason = gate.reason;
  // a skip is a skip: counted as skipped, the reason in its title
  test.skip(`boot guest tests are skipped on this machine (${reason})`, () => {});
}

test('converge-timer writes meshvm-boot.service ordered before the sidecar and after the network, bounded, enabled and never started', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlist-');
  for (const [flow, before] of [
    ['istiod', 'istio.service'],
    ['classic', 'istio.service istio-auth-node-agent.service'],
  ] as const) {
    const file = await writeRunlist(
      dir,
      `timer-${flow}.yaml`,
      JSON.stringify({ name: 'timer', attributes: { flow }, recipes: [{ recipe: 'converge-timer' }] }),
    );
    const first = await meshvm(['converge', file, '--root', root, '--json']);
    t.is(first.exitCode, 0, first.stderr);
    t.is(
      await fs.readFile(path.join(root, BOOT_UNIT), 'utf8'),
      [
        '# Managed by meshvm: changes made here are overwritten.',
        '[Unit]',
        'Description=meshvm boot converge (the istio-token and the rest of tmpfs back before the sidecar starts)',
        'Wants=network-online.target',
        'After=network-online.target',
        `Before=${before}`,
        '',
        '[Service]',
        'Type=oneshot',
        'ExecStart=/usr/local/bin/meshvm converge /etc/meshvm/runlist.yaml',
        'TimeoutStartSec=90s',
        'TimeoutStopSec=15s',
        '',
        '[Install]',
        'WantedBy=multi-user.target',
        '',
      ].join('\n'),
    );
    t.is(await fs.readlink(path.join(root, 'etc/systemd/system/multi-user.target.wants/meshvm-boot.service')), BOOT_UNIT, 'enabled for the next boot');
    const report = JSON.parse(first.stdout) as { resources: { ref: string; changes: string[] }[] };
    const service = report.resources.find((r) => r.ref === 'service[meshvm-boot.service]');
    t.false(service?.changes.some((c) => /start/.test(c)) ?? true, 'never started by a converge: it would wait for the lock the converge holds');
    const again = JSON.parse((await meshvm(['converge', file, '--root', root, '--json'])).stdout) as { summary: { changed: number } };
    t.is(again.summary.changed, 0);
  }
});

// ---------------------------------------------------------------------------------------------------------------
// In a booted guest, rebooted on a persistent overlay of the shared image

const MESHVM_DIR = '/opt/meshvm';
const STARTS = '/var/lib/istio-stub/starts';
const TOKEN = '/run/secrets/tokens/istio-token';

/** istio as the tests see it: it records, at each start, whether the token was there, then runs until stopped. */
const ISTIO_STUB = [
  '[Unit]',
  'Description=istio stand-in: records whether its token is present when it starts',
  '[Service]',
  `ExecStart=/bin/sh -c 'mkdir -p ${path.dirname(STARTS)}; if [ -s ${TOKEN} ]; then w=token; else w=no-token; fi; echo "$$(cat /proc/uptime | cut -d" " -f1) $$w" >> ${STARTS}; exec sleep infinity'`,
  '[Install]',
  'WantedBy=multi-user.target',
  '',
].join('\n');

/** A recipe module in the guest: the token on tmpfs, notifying istio as a changed input does (sidecarRestart). */
const INPUTS_RECIPE = `import { defineRecipe, Directory, File, z } from 'meshvm';
import { sidecarRestart } from '${MESHVM_DIR}/recipes/mesh.ts';
export default defineRecipe({
  name: 'tmpfs-inputs',
  attributes: z.strictObject({}),
  declare: (_a, ctx) => [
    Directory({ path: '/run/secrets/tokens', mode: 0o755 }),
    File({ path: '${TOKEN}', content: 'a token\\n', mode: 0o600 }, sidecarRestart(ctx, 'istiod')),
  ],
});
`;

const runlist = (bootTimeout: string) =>
  JSON.stringify({
    name: 'boot',
    attributes: { flow: 'istiod' },
    recipes: [
      { recipe: './tmpfs-inputs.ts' },
      { recipe: 'sidecar-services' },
      {
        recipe: 'converge-timer',
        // the timer's first run an hour away: only the boot converge runs during the test
        attributes: { command: `/usr/local/bin/node ${MESHVM_DIR}/bin/meshvm.js converge /etc/meshvm/runlist.yaml`, onBootSec: '1h', bootTimeout },
      },
    ],
  });

interface Overlay {
  merged: string;
  remove(): Promise<void>;
}

/** The shared image under a writable overlay of this test's own, so that what the guest writes survives its reboots. */
async function overlay(t: ExecutionContext): Promise<Overlay> {
  const lower = await ensureRootfs({ log: (line) => t.log(line) });
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-boot-overlay-'));
  const dirs = Object.fromEntries(['upper', 'work', 'merged'].map((d) => [d, path.join(base, d)]));
  for (const d of Object.values(dirs)) await fs.mkdir(d);
  await execa('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${dirs.upper},workdir=${dirs.work}`, dirs.merged!]);
  let removed: Promise<void> | undefined;
  const remove = () =>
    (removed ??= (async () => {
      await execa('umount', [dirs.merged!], { reject: false });
      await fs.rm(base, { recursive: true, force: true });
    })());
  t.teardown(remove);
  return { merged: dirs.merged!, remove };
}

/** Boots (or reboots) the overlay: --volatile=no replaces the harness's tmpfs overlay, so the guest's writes persist. */
async function boot(t: ExecutionContext, o: Overlay): Promise<{ guest: Guest; launchedAt: number }> {
  const launchedAt = Date.now();
  const guest = await bootContainer({ rootfsDir: o.merged, nspawnArgs: ['--volatile=no'], node: true, binds: [{ host: PROJECT, guest: MESHVM_DIR }] });
  t.teardown(() => guest.stop());
  await guest.waitForBoot(180_000);
  return { guest, launchedAt };
}

async function out(guest: Guest, argv: string[]): Promise<string> {
  return (await guest.exec(argv, { check: true })).stdout.trim();
}

async function show(guest: Guest, unit: string, ...props: string[]): Promise<Record<string, string>> {
  const text = await out(guest, ['systemctl', 'show', unit, ...props.flatMap((p) => ['-p', p])]);
  return Object.fromEntries(text.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
}

const starts = async (guest: Guest) =>
  ((await guest.readFile(STARTS)) ?? '')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ')[1]);

guestTest(
  'after a reboot the token is back before istio starts: systemd orders the boot converge first, istio starts once, nothing waits on the other',
  async (t) => {
    t.timeout(10 * 60_000);
    const o = await overlay(t);
    let { guest } = await boot(t, o);
    await guest.writeFile('/etc/systemd/system/istio.service', ISTIO_STUB);
    await guest.writeFile('/etc/meshvm/tmpfs-inputs.ts', INPUTS_RECIPE);
    await guest.writeFile('/etc/meshvm/runlist.yaml', runlist('90s'));
    await out(guest, ['systemctl', 'daemon-reload']);
    const first = await guest.exec(['node', `${MESHVM_DIR}/bin/meshvm.js`, 'converge', '/etc/meshvm/runlist.yaml'], { timeoutMs: 120_000 });
    t.is(first.exitCode, 0, first.stderr);
    t.deepEqual(await starts(guest), ['token'], 'the converge started istio once, after its input');

    // the unit as systemd reads it
    const verify = await guest.exec(['systemd-analyze', 'verify', '--man=no', BOOT_UNIT]);
    t.is(verify.exitCode, 0, verify.stderr);
    const unit = await show(
      guest,
      'meshvm-boot.service',
      'Type',
      'Before',
      'After',
      'Wants',
      'TimeoutStartUSec',
      'TimeoutStopUSec',
      'UnitFileState',
      'WantedBy',
    );
    t.is(unit.Type, 'oneshot');
    t.regex(unit.Before ?? '', /\bistio\.service\b/);
    t.regex(unit.After ?? '', /\bnetwork-online\.target\b/);
    t.regex(unit.Wants ?? '', /\bnetwork-online\.target\b/);
    t.is(unit.TimeoutStartUSec, '1min 30s');
    t.is(unit.TimeoutStopUSec, '15s');
    t.is(unit.UnitFileState, 'enabled');
    t.regex(unit.WantedBy ?? '', /\bmulti-user\.target\b/);
    t.regex(await out(guest, ['systemctl', 'list-dependencies', '--after', '--plain', '--no-pager', 'istio.service']), /\bmeshvm-boot\.service\b/);

    // reboot: /run is a fresh tmpfs; the boot converge puts the token back, then istio starts
    await guest.stop();
    ({ guest } = await boot(t, o));
    await until(async () => (await starts(guest)).length === 2, { what: 'istio to start after the reboot', timeoutMs: 120_000, intervalMs: 200 });
    t.deepEqual(await starts(guest), ['token', 'token'], 'istio found its token when it started');
    const converge = await show(guest, 'meshvm-boot.service', 'Result', 'ExecMainStatus', 'ExecMainStartTimestampMonotonic', 'ExecMainExitTimestampMonotonic');
    const istio = await show(guest, 'istio.service', 'ActiveState', 'ExecMainStartTimestampMonotonic', 'NRestarts');
    t.is(converge.Result, 'success');
    t.is(converge.ExecMainStatus, '0');
    t.is(istio.ActiveState, 'active');
    t.true(Number(istio.ExecMainStartTimestampMonotonic) >= Number(converge.ExecMainExitTimestampMonotonic), JSON.stringify({ converge, istio }));
    const report = JSON.parse((await guest.readFile('/var/lib/meshvm/last-run.json'))!) as {
      resources: { ref: string; status: string; changes: string[] }[];
      notifications: { ref: string; status: string }[];
    };
    t.is(report.resources.find((r) => r.ref === `file[${TOKEN}]`)?.status, 'changed', 'the boot converge wrote the token');
    t.deepEqual(report.resources.find((r) => r.ref === 'service[istio.service]')?.changes, ['start'], 'it queued istio (without waiting for it)');
    t.deepEqual(
      report.notifications.map((n) => `${n.ref} ${n.status}`),
      ['service[istio.service] not-needed'],
      'the restart the token owes is not needed: istio had not started yet',
    );
    const bootMs = (Number(converge.ExecMainExitTimestampMonotonic) - Number(converge.ExecMainStartTimestampMonotonic)) / 1000;
    t.log(
      `boot converge ${bootMs.toFixed(0)} ms; istio started ${((Number(istio.ExecMainStartTimestampMonotonic) - Number(converge.ExecMainExitTimestampMonotonic)) / 1000).toFixed(0)} ms after it ended`,
    );

    // a converge that cannot finish (here: another holds the run lock at boot, as a dead control plane would hold it) holds
    // istio no longer than the bound; the timer completes the work later
    await guest.writeFile('/etc/meshvm/runlist.yaml', runlist('5s'));
    const shorter = await guest.exec(['node', `${MESHVM_DIR}/bin/meshvm.js`, 'converge', '/etc/meshvm/runlist.yaml'], { timeoutMs: 120_000 });
    t.is(shorter.exitCode, 0, shorter.stderr);
    await guest.writeFile(
      '/etc/systemd/system/lock-holder.service',
      [
        '[Unit]',
        'Description=holds the meshvm run lock through the boot',
        'Before=meshvm-boot.service',
        '[Service]',
        'ExecStart=/usr/bin/flock /run/meshvm.lock /bin/sleep 600',
        // started once the lock is taken (flock -n succeeds only while nobody holds it)
        "ExecStartPost=/bin/sh -c 'while flock -n /run/meshvm.lock true; do sleep 0.05; done'",
        '[Install]',
        'WantedBy=multi-user.target',
        '',
      ].join('\n'),
    );
    await out(guest, ['systemctl', 'enable', 'lock-holder.service']);
    await guest.stop();
    ({ guest } = await boot(t, o));
    await until(async () => (await starts(guest)).length === 3, {
      what: 'istio to start after the timed-out boot converge',
      timeoutMs: 120_000,
      intervalMs: 200,
    });
    t.deepEqual(await starts(guest), ['token', 'token', 'no-token'], 'istio started anyway, without the token the converge could not write');
    const held = await show(guest, 'meshvm-boot.service', 'Result', 'ExecMainStartTimestampMonotonic', 'InactiveEnterTimestampMonotonic');
    const late = await show(guest, 'istio.service', 'ExecMainStartTimestampMonotonic');
    t.is(held.Result, 'timeout');
    const heldMs = (Number(late.ExecMainStartTimestampMonotonic) - Number(held.ExecMainStartTimestampMonotonic)) / 1000;
    t.true(heldMs >= 5000 && heldMs < 25_000, `istio held ${heldMs} ms: the 5 s bound, plus the converge's stop`);
    t.log(`with the run lock held at boot: istio started ${heldMs.toFixed(0)} ms after the boot converge began (bound 5 s + its stop)`);
  },
);
