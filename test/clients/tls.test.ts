// TLS cannot be turned off by accident: VAULT_SKIP_VERIFY and NODE_TLS_REJECT_UNAUTHORIZED are not obeyed, http:// Vault needs insecure: true.
// The servers are the Vault and Kubernetes API stand-ins (test/stand-ins/), serving TLS with a test CA; the "wrong CA" is another fresh one.
import test from 'ava';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import { Route53Records } from '../../clients/route53.ts';
import { InsecureTlsError } from '../../clients/tls.ts';
import { VaultClient } from '../../clients/vault.ts';
import { callsMatching, startKubernetes, startVault, testPki } from '../stand-ins/index.ts';

const FAST = { attempts: 1, baseMs: 1, maxMs: 1 };

// node-vault reads VAULT_SKIP_VERIFY when a client is made, and treats any value (even "false") as "skip"
process.env['VAULT_SKIP_VERIFY'] = 'false';

test.serial('VAULT_SKIP_VERIFY=false and a wrong CA: the login is refused, the secret_id never reaches the server', async (t) => {
  const vault = await startVault({ tls: true, appRoles: { meshvm: { roleId: 'role-id-1', secretId: 'secret-id-tls-canary' } } });
  t.teardown(() => vault.stop());
  const wrongCa = (await testPki({ fresh: true })).caPem;
  const files: Record<string, string> = { '/ca.pem': wrongCa, '/role-id': 'role-id-1', '/secret-id': 'secret-id-tls-canary' };
  const login = (caFile?: string) =>
    new VaultClient(
      { address: vault.url, ...(caFile && { caFile }), retry: FAST, auth: { method: 'approle', roleIdFile: '/role-id', secretIdFile: '/secret-id' } },
      { readFile: async (file) => files[file] },
    ).login();
  await t.throwsAsync(login('/ca.pem'), { message: /TLS certificate was refused/ });
  await t.throwsAsync(login(), { message: /TLS certificate was refused/ }, "without caFile: Node's CA store, which does not have the test CA");
  t.deepEqual(vault.calls, [], 'no request got past the TLS handshake');
  // the right CA: the same client code logs in (the refusals above were about the certificate, nothing else)
  files['/ca.pem'] = vault.caPem!;
  await t.notThrowsAsync(login('/ca.pem'));
  t.is(callsMatching(vault.calls, { path: '/v1/auth/approle/login' }).length, 1);
});

test.serial('NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment: every client refuses before connecting, naming the variable', (t) => {
  const env = { NODE_TLS_REJECT_UNAUTHORIZED: '0' };
  const vault = t.throws(() => new VaultClient({ address: 'https://vault.example.com:8200', auth: { method: 'token' } }, { env }), {
    instanceOf: InsecureTlsError,
  });
  t.regex(vault?.message ?? '', /^Vault: refusing to connect with NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment .*caFile/);
  t.throws(() => new KubernetesClient({ server: 'https://203.0.113.10:6443', caPem: 'PEM', token: 'x', env }), {
    message: /^the Kubernetes API: refusing to connect with NODE_TLS_REJECT_UNAUTHORIZED=0/,
  });
  t.throws(() => new Route53Records({ env }), { message: /^Route53: refusing to connect with NODE_TLS_REJECT_UNAUTHORIZED=0/ });
  // the AWS SDK's endpoint variables: one in clear is refused (the SDK would use it), an explicit endpoint is the runlist's say
  for (const name of ['AWS_ENDPOINT_URL_ROUTE_53', 'AWS_ENDPOINT_URL']) {
    t.throws(() => new Route53Records({ env: { [name]: 'http://203.0.113.9:8080' } }), {
      message: `Route53: refusing the endpoint ${name}=http://203.0.113.9:8080 from the environment: it is plain http; unset it (or give https://)`,
    });
  }
  t.notThrows(() => new Route53Records({ env: { AWS_ENDPOINT_URL: 'https://route53.example.internal' } }));
  t.notThrows(() => new Route53Records({ endpoint: 'http://127.0.0.1:4566', env: { AWS_ENDPOINT_URL: 'http://127.0.0.1:4566' } }));
  for (const value of ['1', ''])
    t.notThrows(() => new VaultClient({ address: 'https://v:8200', auth: { method: 'token' } }, { env: { NODE_TLS_REJECT_UNAUTHORIZED: value } }));
});

test.serial('the Kubernetes client checks the certificate itself: NODE_TLS_REJECT_UNAUTHORIZED=0 reaching it anyway changes nothing', async (t) => {
  const kube = await startKubernetes({ tokens: { 'tls-token': { user: 'u' } } });
  t.teardown(() => kube.stop());
  const wrongCa = (await testPki({ fresh: true })).caPem;
  const previous = process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
  process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = '0'; // what undici falls back to when rejectUnauthorized is left unset
  t.teardown(() => {
    if (previous === undefined) delete process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
    else process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = previous;
  });
  // env: {} lets the client be made (the refusal above is tested on its own): the connection itself must still verify
  const client = new KubernetesClient({ server: kube.url, caPem: wrongCa, token: 'tls-token', env: {}, retry: FAST });
  await t.throwsAsync(client.rootCert('vm-ns'));
  t.deepEqual(kube.calls, [], 'the request never got past the TLS handshake');
});

test.serial('http:// Vault: refused naming the address, unless insecure: true, which warns on every run', async (t) => {
  const vault = await startVault();
  t.teardown(() => vault.stop());
  const token = vault.issueToken({ policies: ['root'] });
  t.throws(() => new VaultClient({ address: vault.url, auth: { method: 'token' } }, { env: { VAULT_TOKEN: token } }), {
    message: /^vault: address: is http:\/\/: the login secret and every token would travel in clear; use https:\/\/ \(or set insecure: true, for a lab\)/,
  });
  t.deepEqual(vault.calls, []);
  const warnings: string[] = [];
  for (let run = 0; run < 2; run++) {
    const client = new VaultClient(
      { address: vault.url, insecure: true, auth: { method: 'token' } },
      { env: { VAULT_TOKEN: token }, warn: (w) => warnings.push(w) },
    );
    await client.login();
  }
  t.deepEqual(warnings, [
    `Vault at ${vault.url} is reached over plain http (insecure: true): the login secret and the tokens travel in clear`,
    `Vault at ${vault.url} is reached over plain http (insecure: true): the login secret and the tokens travel in clear`,
  ]);
  const quiet: string[] = [];
  new VaultClient({ address: 'https://vault.example.com', insecure: true, auth: { method: 'token' } }, { env: {}, warn: (w) => quiet.push(w) });
  t.deepEqual(quiet, [], 'insecure: true on an https address warns of nothing');
});
