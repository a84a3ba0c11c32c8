// bin/runtime-env.ts: which of Node's runtime variables make the executable start again without them.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { runtimeVariables, trustedCaFile } from '../../bin/runtime-env.ts';
import { scratchRoot } from '../helpers/scratch.ts';

test('NODE_* (but NODE_TLS_REJECT_UNAUTHORIZED), UV_* and OPENSSL_* are cleared; NODE_EXTRA_CA_CERTS only when its file is not trusted', (t) => {
  const env = {
    NODE_OPTIONS: '--require x',
    NODE_EXTRA_CA_CERTS: '/ca.pem',
    NODE_TLS_REJECT_UNAUTHORIZED: '0',
    UV_THREADPOOL_SIZE: '1',
    OPENSSL_CONF: '/x',
    PATH: '/bin',
  };
  t.deepEqual(
    runtimeVariables(env, () => false),
    ['NODE_OPTIONS', 'NODE_EXTRA_CA_CERTS', 'UV_THREADPOOL_SIZE', 'OPENSSL_CONF'],
  );
  t.deepEqual(
    runtimeVariables(env, (file) => file === '/ca.pem'),
    ['NODE_OPTIONS', 'UV_THREADPOOL_SIZE', 'OPENSSL_CONF'],
  );
  t.deepEqual(
    runtimeVariables({ NODE_EXTRA_CA_CERTS: '/ca.pem' }, (file) => file === '/ca.pem'),
    [],
    'alone and trusted: no re-run',
  );
});

test('a CA file is trusted only when root (or this user) alone controls it and the path to it', async (t) => {
  const dir = await scratchRoot(t, 'meshvm-ca-');
  await fs.chmod(dir, 0o700);
  const ca = path.join(dir, 'ca.pem');
  await fs.writeFile(ca, 'pem\n', { mode: 0o644 });
  t.true(trustedCaFile(ca, 0));
  t.false(trustedCaFile('ca.pem', 0), 'a relative path depends on the working directory');
  t.false(trustedCaFile('', 0));
  t.false(trustedCaFile(undefined, 0));
  t.false(trustedCaFile(path.join(dir, 'missing.pem'), 0));
  await fs.chmod(ca, 0o664);
  t.false(trustedCaFile(ca, 0), 'group-writable');
  await fs.chmod(ca, 0o644);
  await fs.chown(ca, 65534, 65534);
  t.false(trustedCaFile(ca, 0), "another user's file");
  t.true(trustedCaFile(ca, 65534), 'that user trusts it for their own runs');
  await fs.chown(ca, 0, 0);
  await fs.chmod(dir, 0o777);
  t.false(trustedCaFile(ca, 0), 'in a directory others can write to (the file could be replaced)');
});
