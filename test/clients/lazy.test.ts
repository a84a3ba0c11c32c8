// The heavy client libraries (node-vault, @kubernetes/client-node, the AWS SDK) load only when a client is used; checked with module hooks in a fresh Node.
import test from 'ava';
import { execa } from 'execa';
import { PROJECT } from '../helpers/scratch.ts';

const HEAVY = /node_modules\/(node-vault|@kubernetes\/client-node|@aws-sdk|@smithy|axios)\/|^clients\//;
/** Client modules that import no library (a zod schema; the registration objects' helpers and the error/retry logic they share). */
const LIGHT_CLIENTS = ['clients/vault-config.ts', 'clients/workload-group.ts', 'clients/kubernetes-errors.ts', 'clients/retry.ts'];

/** Runs `body` in a fresh Node that records every module it resolves; returns the project-relative URLs. */
async function modulesLoaded(body: string): Promise<string[]> {
  const script = `
    import { registerHooks } from 'node:module';
    const loaded = new Set();
    registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); loaded.add(r.url); return r; } });
    ${body}
    process.stdout.write(JSON.stringify([...loaded]));
  `;
  const { stdout } = await execa(process.execPath, ['--input-type=module', '-e', script], { cwd: PROJECT });
  return (JSON.parse(stdout) as string[]).map((url) => url.replace(`file://${PROJECT}/`, ''));
}

test('the CLI, the built-in recipes and a Route53Records declaration load no client library', async (t) => {
  const loaded = await modulesLoaded(`
    await import('./engine/cli.ts');
    await import('./recipes/index.ts');
    await import('./index.ts');
    const { Route53Records } = await import('./resources/route53-record.ts');
    Route53Records({ zoneId: 'Z1', records: [{ name: 'istiod.example.com', type: 'CNAME', values: ['lb.example.net'] }] });
    await import('./clients/vault-config.ts');
  `);
  t.true(loaded.includes('resources/route53-record.ts'), 'the hook sees the modules');
  t.deepEqual(
    loaded.filter((url) => HEAVY.test(url) && !LIGHT_CLIENTS.includes(url)),
    [],
    'nothing heavy, no client module but the light ones',
  );
});

test('using a client loads its library then, and only its own', async (t) => {
  const vault = await modulesLoaded(
    `const { VaultClient } = await import('./clients/vault.ts'); new VaultClient({ address: 'https://vault.example:8200', auth: { method: 'token' } });`,
  );
  t.true(vault.some((url) => url.includes('node_modules/node-vault/')));
  t.false(vault.some((url) => url.includes('@kubernetes/client-node')));
  const kube = await modulesLoaded(`await import('./clients/kubernetes.ts');`);
  t.true(kube.some((url) => url.includes('node_modules/@kubernetes/client-node/')));
  t.false(kube.some((url) => /node-vault|@aws-sdk/.test(url)));
  const dns = await modulesLoaded(`await import('./clients/dns-check.ts');`);
  t.false(
    dns.some((url) => /node_modules/.test(url)),
    'the DNS check (asked before any Route53 call) loads no SDK',
  );
});
