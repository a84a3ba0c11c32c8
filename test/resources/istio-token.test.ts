// IstioToken on a scratch root: minted when missing, kept while valid, minted again when due or for someone else; never shown.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { localHost } from '../../engine/host-local.ts';
import { IstioToken, type TokenMinter } from '../../resources/istio-token.ts';
import { converge, convergesOnce, scratchRoot } from '../helpers/scratch.ts';

/** An unsigned JWT with the claims a TokenRequest's token carries. */
function jwt(claims: { sub: string; aud: string[]; exp: number }): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'none' })}.${part(claims)}.signature-long-enough-to-be-a-secret`;
}

function minter(): TokenMinter & { calls: number } {
  const mint = async (request: Parameters<TokenMinter>[0]) => {
    mint.calls++;
    const exp = Math.floor(Date.now() / 1000) + request.expirationSeconds;
    const token = jwt({ sub: `system:serviceaccount:${request.namespace}:${request.serviceAccount}`, aud: request.audiences, exp });
    return { token, expiresAt: new Date(exp * 1000) };
  };
  mint.calls = 0;
  return mint;
}

const TOKEN = '/var/run/secrets/tokens/istio-token';

test('minted once when missing, with its mode; the token never appears in the report', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, path.dirname(TOKEN)), { recursive: true });
  const mint = minter();
  const first = await convergesOnce(t, root, () => [IstioToken({ namespace: 'ns', serviceAccount: 'sa', mint })]);
  t.is(mint.calls, 1);
  const token = await fs.readFile(path.join(root, TOKEN), 'utf8');
  t.is((await fs.stat(path.join(root, TOKEN))).mode & 0o777, 0o600);
  t.false(JSON.stringify(first).includes(token.trim()), 'the token is not in the report');
});

test('a token for another service account, or due for renewal, is minted again', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, path.dirname(TOKEN)), { recursive: true });
  const now = Math.floor(Date.now() / 1000);
  const mint = minter();
  for (const claims of [
    { sub: 'system:serviceaccount:ns:other', aud: ['istio-ca'], exp: now + 40_000 },
    { sub: 'system:serviceaccount:ns:sa', aud: ['istio-ca'], exp: now + 600 },
  ]) {
    await fs.writeFile(path.join(root, TOKEN), jwt(claims), { mode: 0o600 });
    const result = await converge(localHost({ root }), [IstioToken({ namespace: 'ns', serviceAccount: 'sa', mint })]);
    t.is(result.resources[0]!.status, 'changed');
  }
  t.is(mint.calls, 2);
});
