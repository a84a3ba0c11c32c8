// ResolvConf's undo (ensure: absent), on scratch roots built as each resolver owner leaves a host: converge, then undo, and
// the resolver's files are what they were before meshvm, byte for byte (content, mode, owner, symlinks); a second undo
// changes nothing; a file someone rewrote after meshvm is theirs; a machine converged before originals were kept gets
// its file back from meshvm's backups.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { localHost } from '../../engine/host-local.ts';
import { ResolvConf } from '../../resources/resolv-conf/index.ts';
import { converge, snapshot, type Snapshot } from '../helpers/scratch.ts';
import { hostRoot } from '../helpers/resolver-hosts.ts';

const spec = { nameservers: ['127.0.0.1'], search: ['svc.cluster.local'], upstream: { file: '/etc/meshvm/upstream-resolv.conf' } };
const present = () => [ResolvConf(spec)];
const absent = () => [ResolvConf({ ...spec, ensure: 'absent' })];

/** meshvm's own state: the backups of the files it replaced (kept, as after any converge) and the directories it made for its files. */
const OWN = /^(var\/|var\/lib\/|var\/lib\/meshvm\/|var\/lib\/meshvm\/backup\/.*|etc\/meshvm\/)$/;
const machineFiles = (snap: Snapshot) => Object.fromEntries(Object.entries(snap).filter(([p]) => !OWN.test(p)));

for (const kind of ['dhclient', 'plain', 'missing', 'resolved', 'resolvconf', 'network-manager', 'network-manager-symlink']) {
  test(`${kind}: undone, the resolver's files are as they were before meshvm; a second undo changes nothing`, async (t) => {
    const root = await hostRoot(t, kind);
    await fs.chmod(path.join(root, 'etc'), 0o755);
    // a host with systemd-resolved has systemd's /etc directory
    if (kind === 'resolved') await fs.mkdir(path.join(root, 'etc/systemd'));
    const before = await snapshot(root);
    // no /etc/resolv.conf to take the upstream servers from: given
    const given = kind === 'missing' ? { ...spec, upstream: { ...spec.upstream, servers: ['192.0.2.1'] } } : spec;
    const joined = await converge(localHost({ root }), [ResolvConf(given)]);
    t.false(joined.failed, joined.resources[0]!.error);
    t.notDeepEqual(machineFiles(await snapshot(root)), machineFiles(before), 'the converge changed the resolver');

    const undone = await converge(localHost({ root }), [ResolvConf({ ...given, ensure: 'absent' })]);
    t.false(undone.failed, undone.resources[0]!.error);
    t.is(undone.resources[0]!.status, 'changed');
    t.deepEqual(machineFiles(await snapshot(root)), machineFiles(before));
    const again = await converge(localHost({ root }), [ResolvConf({ ...given, ensure: 'absent' })]);
    t.is(again.resources[0]!.status, 'unchanged');
  });
}

test('an /etc/resolv.conf rewritten since meshvm wrote it is left as it is (it is not meshvm’s any more); meshvm’s hook still goes', async (t) => {
  const root = await hostRoot(t, 'dhclient');
  t.false((await converge(localHost({ root }), present())).failed);
  await fs.writeFile(path.join(root, 'etc/resolv.conf'), 'nameserver 192.0.2.53\n');
  const undone = await converge(localHost({ root }), absent());
  t.false(undone.failed, undone.resources[0]!.error);
  t.is(await fs.readFile(path.join(root, 'etc/resolv.conf'), 'utf8'), 'nameserver 192.0.2.53\n');
  await t.throwsAsync(fs.stat(path.join(root, 'etc/dhcp/dhclient-enter-hooks.d/meshvm')));
});

test('converged before originals were kept: the newest backup that is not meshvm’s own puts the file back', async (t) => {
  const root = await hostRoot(t, 'plain');
  const original = await fs.readFile(path.join(root, 'etc/resolv.conf'), 'utf8');
  t.false((await converge(localHost({ root }), present())).failed);
  await fs.rm(path.join(root, 'var/lib/meshvm/resolver-originals'), { recursive: true });
  // a later converge that changed the file again: its backup is meshvm's own text, which is no original
  t.false((await converge(localHost({ root }), [ResolvConf({ ...spec, search: [] })])).failed);
  const undone = await converge(localHost({ root }), [ResolvConf({ ...spec, search: [], ensure: 'absent' })]);
  t.false(undone.failed, undone.resources[0]!.error);
  t.is(await fs.readFile(path.join(root, 'etc/resolv.conf'), 'utf8'), original);
});

test('plan of the undo says what it would put back and writes nothing', async (t) => {
  const root = await hostRoot(t, 'dhclient');
  t.false((await converge(localHost({ root }), present())).failed);
  const joined = await snapshot(root);
  const plan = await converge(localHost({ root }), absent(), 'plan');
  t.is(plan.resources[0]!.status, 'would-change');
  t.deepEqual(plan.resources[0]!.fields, [
    'file[/etc/resolv.conf]',
    'file[/var/lib/meshvm/resolver-originals/%2Fetc%2Fresolv.conf.json]',
    'file[/etc/dhcp/dhclient-enter-hooks.d/meshvm]',
    // the directories emptied on the way (the hook's, the originals') read as they are now: not empty, so not removed
    'file[/etc/meshvm/upstream-resolv.conf]',
  ]);
  t.deepEqual(await snapshot(root), joined);
});
