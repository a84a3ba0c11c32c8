import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Group, User } from '../../resources/accounts.ts';
import { File } from '../../resources/file.ts';
import { localHost } from '../../engine/host-local.ts';
import { converge, convergesOnce, scratchRoot } from '../helpers/scratch.ts';

test('a system group and user converge once inside --root, never touching the host', async (t) => {
  const root = await scratchRoot(t);
  const hostPasswd = await fs.readFile('/etc/passwd', 'utf8');
  await convergesOnce(t, root, () => [
    Group({ name: 'istio-proxy' }),
    User({ name: 'istio-proxy', group: 'istio-proxy', home: '/var/lib/istio', shell: '/bin/false', comment: 'Istio sidecar proxy' }),
  ]);
  const passwd = await fs.readFile(path.join(root, 'etc/passwd'), 'utf8');
  t.regex(passwd, /^istio-proxy:x:(\d+):(\d+):Istio sidecar proxy:\/var\/lib\/istio:\/bin\/false$/m);
  const [, uid] = /^istio-proxy:x:(\d+)/m.exec(passwd)!;
  t.true(Number(uid) < 1000, 'a system uid');
  t.is(await fs.readFile('/etc/passwd', 'utf8'), hostPasswd, "the host's own /etc/passwd is untouched");
});

test('a user drifted by hand is put back (shell, supplementary groups)', async (t) => {
  const root = await scratchRoot(t);
  const declare = (shell: string) => [Group({ name: 'certs' }), User({ name: 'svc', shell, groups: ['certs'] })];
  await converge(localHost({ root }), declare('/bin/false'));
  const result = await converge(localHost({ root }), declare('/usr/sbin/nologin'));
  t.deepEqual(result.resources.find((r) => r.ref === 'user[svc]')!.changes, ['set shell to /usr/sbin/nologin (was /bin/false)']);
  t.regex(await fs.readFile(path.join(root, 'etc/passwd'), 'utf8'), /^svc:x:\d+:\d+::[^:]*:\/usr\/sbin\/nologin$/m);
  t.regex(await fs.readFile(path.join(root, 'etc/group'), 'utf8'), /^certs:x:\d+:svc$/m);
});

test("files owned by a user created in the same run get the root's uid, not the host's", async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc/certs'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\nother:x:999:999::/:/bin/false\n');
  await fs.writeFile(path.join(root, 'etc/group'), 'root:x:0:\nother:x:999:\n');
  await converge(localHost({ root }), [
    User({ name: 'istio-proxy' }),
    File({ path: '/etc/certs/a.pem', content: 'x', owner: 'istio-proxy', group: 'istio-proxy' }),
  ]);
  const [, uid, gid] = /^istio-proxy:x:(\d+):(\d+)/m.exec(await fs.readFile(path.join(root, 'etc/passwd'), 'utf8'))!;
  const st = await fs.stat(path.join(root, 'etc/certs/a.pem'));
  t.is(st.uid, Number(uid));
  t.is(st.gid, Number(gid));
  t.not(st.uid, 999);
});

test('account names useradd would reject are refused at declaration', (t) => {
  t.throws(() => User({ name: 'Bad Name' }), { message: /user\[Bad Name\].*name: expected a name of lower case letters/ });
  t.throws(() => Group({ name: 'x'.repeat(40) }), { message: /group\[x+\]/ });
});
