// A response-wrapped AppRole secret_id (cloud-init's user-data): unwrapped once by a converge, kept 0600, the wrapped file gone; single use.
// Vault is the stand-in (test/stand-ins/vault.ts): sys/wrapping/wrap, X-Vault-Wrap-TTL, sys/wrapping/unwrap as Vault 1.15+ answers them.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { hostSecretIdStore, VaultClient } from '../../clients/vault.ts';
import { localHost } from '../../engine/host-local.ts';
import { secrets } from '../../engine/secrets.ts';
import { scratchRoot } from '../helpers/scratch.ts';
import { callsMatching, startVault } from '../stand-ins/index.ts';
import type { VaultStandIn } from '../stand-ins/index.ts';

const FAST = { attempts: 2, baseMs: 1, maxMs: 2 };

async function setup(t: ExecutionContext): Promise<{ v: VaultStandIn; dir: string; client: (o?: { unwrap?: boolean }) => VaultClient }> {
  const v = await startVault({
    tls: true,
    policies: {
      mesh: [{ path: 'secret/data/meshvm/*', capabilities: ['read'] }],
      operator: [{ path: 'auth/approle/role/meshvm/secret-id', capabilities: ['update'] }],
    },
    appRoles: { meshvm: { roleId: 'role-id-1', secretId: 'long-lived-secret-id-never-used', policies: ['mesh'] } },
  });
  t.teardown(() => v.stop());
  const dir = await scratchRoot(t);
  await fs.writeFile(path.join(dir, 'ca.pem'), v.caPem!);
  await fs.writeFile(path.join(dir, 'role-id'), 'role-id-1\n');
  const client = (o: { unwrap?: boolean } = {}) =>
    new VaultClient(
      {
        address: v.url,
        caFile: path.join(dir, 'ca.pem'),
        retry: FAST,
        auth: {
          method: 'approle',
          roleIdFile: path.join(dir, 'role-id'),
          secretIdFile: path.join(dir, 'secret-id'),
          wrappedSecretIdFile: path.join(dir, 'wrapped'),
        },
      },
      // the paths are real ones here: a Host on / writes them through the safe path walk
      o.unwrap === false ? {} : { unwrap: hostSecretIdStore(localHost()) },
    );
  return { v, dir, client };
}

/** What the operator runs: `vault write -wrap-ttl=10m -f auth/approle/role/meshvm/secret-id`. */
async function wrappedSecretId(v: VaultStandIn, ttl = '10m'): Promise<{ wrappingToken: string; secretId: string }> {
  const operator = v.issueToken({ policies: ['operator'] });
  const response = await fetchJson(v, 'auth/approle/role/meshvm/secret-id', operator, { 'x-vault-wrap-ttl': ttl });
  const wrappingToken = (response.wrap_info as { token: string }).token;
  const secretId = [...v.state.secretIds.get('meshvm')!].at(-1)!;
  return { wrappingToken, secretId };
}

async function fetchJson(v: VaultStandIn, apiPath: string, token: string, headers: Record<string, string> = {}, body = {}): Promise<Record<string, unknown>> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(
      `${v.url}/v1/${apiPath}`,
      { method: 'POST', ca: v.caPem, headers: { 'x-vault-token': token, 'content-type': 'application/json', ...headers } },
      (res) => {
        let text = '';
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode, ...(JSON.parse(text || '{}') as Record<string, unknown>) }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

test('stand-in: a wrapping token unwraps once; a second unwrap, or one after its TTL, gets Vault\'s 400 "wrapping token is not valid"', async (t) => {
  const { v } = await setup(t);
  const token = v.wrap({ secret_id: 'wrapped-value' });
  t.like(await fetchJson(v, 'sys/wrapping/unwrap', token), { status: 200, data: { secret_id: 'wrapped-value' } });
  t.deepEqual(await fetchJson(v, 'sys/wrapping/unwrap', token), { status: 400, errors: ['wrapping token is not valid or does not exist'] });
  const expired = v.wrap({ secret_id: 'x' }, 0);
  t.deepEqual(await fetchJson(v, 'sys/wrapping/unwrap', expired), { status: 400, errors: ['wrapping token is not valid or does not exist'] });
  // sys/wrapping/wrap (authorized by the default policy) and X-Vault-Wrap-TTL on any response
  const caller = v.issueToken();
  const wrapped = await fetchJson(v, 'sys/wrapping/wrap', caller, { 'x-vault-wrap-ttl': '60' }, { hello: 'world' });
  t.like(wrapped, { status: 200, data: null, wrap_info: { ttl: 60, creation_path: 'sys/wrapping/wrap' } });
  t.like(await fetchJson(v, 'sys/wrapping/unwrap', (wrapped.wrap_info as { token: string }).token), { data: { hello: 'world' } });
});

test('a converge unwraps the secret_id once, keeps it 0600 in secretIdFile, removes the wrapped file; the next run logs in with it', async (t) => {
  const { v, dir, client } = await setup(t);
  const { wrappingToken, secretId } = await wrappedSecretId(v);
  await fs.writeFile(path.join(dir, 'wrapped'), `${wrappingToken}\n`, { mode: 0o600 });
  const first = client();
  await first.login();
  t.is(callsMatching(v.calls, { path: '/v1/auth/approle/login' })[0]?.status, 200);
  t.is(await fs.readFile(path.join(dir, 'secret-id'), 'utf8'), `${secretId}\n`);
  t.is((await fs.stat(path.join(dir, 'secret-id'))).mode & 0o777, 0o600);
  await t.throwsAsync(fs.stat(path.join(dir, 'wrapped')), { code: 'ENOENT' });
  t.deepEqual(await fs.readdir(dir), ['ca.pem', 'role-id', 'secret-id'], 'no temp file left');
  t.is(secrets.redact(`${secretId} ${wrappingToken}`), '(sensitive) (sensitive)');
  await first.close();
  // the timer's next run: no wrapped file, the kept secret_id
  await client().login();
  t.is(callsMatching(v.calls, { path: '/v1/sys/wrapping/unwrap' }).length, 1, 'unwrapped once');
  t.deepEqual(
    callsMatching(v.calls, { path: '/v1/auth/approle/login' }).map((c) => c.status),
    [200, 200],
  );
});

test('plan does not unwrap (single use): it refuses, consuming nothing; an already unwrapped token is refused as possibly stolen', async (t) => {
  const { v, dir, client } = await setup(t);
  const { wrappingToken } = await wrappedSecretId(v);
  await fs.writeFile(path.join(dir, 'wrapped'), `${wrappingToken}\n`, { mode: 0o600 });
  // Vault failing (sealed, down) is not a used token: the error says so, the wrapped file stays for the next run
  v.faults.inject({ kind: 'sealed', path: '/v1/sys/wrapping/unwrap', times: 2 });
  const sealed = await t.throwsAsync(client().login());
  t.notRegex(sealed?.message ?? '', /someone else/);
  t.regex(sealed?.message ?? '', /unwrapping the secret_id in .*wrapped/);
  t.is((await fs.readFile(path.join(dir, 'wrapped'), 'utf8')).trim(), wrappingToken);
  await t.throwsAsync(client({ unwrap: false }).login(), {
    message: `vault.auth.wrappedSecretIdFile: ${path.join(dir, 'wrapped')} holds a wrapped secret_id, which can be unwrapped only once: a converge unwraps it (plan does not)`,
  });
  t.is(callsMatching(v.calls, { path: '/v1/sys/wrapping/unwrap' }).length, 2, 'only the two sealed attempts');
  // someone else unwraps it first (it was readable in user-data): the VM's unwrap fails, loudly
  t.like(await fetchJson(v, 'sys/wrapping/unwrap', wrappingToken), { status: 200 });
  const error = await t.throwsAsync(client().login());
  t.regex(
    error?.message ?? '',
    /would not unwrap the secret_id in .*wrapped \(wrapping token is not valid or does not exist\): .*already unwrapped; .*someone else may hold the secret_id/,
  );
  t.false(error?.message.includes(wrappingToken), 'the wrapping token is not shown');
  await t.throwsAsync(fs.stat(path.join(dir, 'secret-id')), { code: 'ENOENT' });
  t.is(callsMatching(v.calls, { path: '/v1/auth/approle/login' }).length, 0);
});
