// Secret canaries: a converge, a re-converge and a verify of the classic mesh flow against the Vault and Kubernetes API
// stand-ins (test/stand-ins/, standing for HashiCorp Vault and a Kubernetes API server), with secrets in meshvm's environment
// and in what the clients read. None may show in stdout, stderr, the JSON report, a backup, or a child's environment;
// a common word stored beside them in Vault is not masked in a file's diff (only the values the clients mark are secrets).
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startMeshLab, VM_SA } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

const ENV_CANARIES = {
  VAULT_TOKEN: 'hvs.canary-env-vault-token-7Qm2',
  AWS_SECRET_ACCESS_KEY: 'canary-env-aws-secret-key-Jx81',
  AWS_SESSION_TOKEN: 'canary-env-aws-session-token-pL0v',
  KUBECONFIG_TOKEN: 'canary-env-other-secret-Zz90',
};
const K8S_TOKEN = 'canary-k8s-scoped-token-Rw4c';
/** Variables the libraries read that must change nothing: debug output of every \`debug\` user (node-vault would print request bodies), Vault's namespace, prefix and skip-verify. */
const ENV_NOISE = { DEBUG: '*', VAULT_NAMESPACE: 'elsewhere', VAULT_PREFIX: '/elsewhere', VAULT_SKIP_VERIFY: 'true' };

const SITE = (root: string, content: string) => `
import { defineRecipe, Execute, File, z } from 'meshvm';
export default defineRecipe({
  name: 'site',
  attributes: z.strictObject({}),
  declare: () => [
    // a child that dumps the environment it was given (on this machine: the file lands in the scratch root)
    Execute({ onHost: true, name: 'dump-env', command: ['sh', '-c', 'env > ${root}/env-dump'], creates: '/env-dump' }),
    File({ path: '/etc/site.conf', content: ${JSON.stringify(content)}, mode: 0o644, verify: ['sh', '-c', 'env > ${root}/verify-env'], verifyOnHost: true }),
  ],
});
`;

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(path.join(entry.parentPath, entry.name));
  }
  return out;
}

test('converge, re-converge and verify: 0 canary hits in outputs, reports, backups and child environments; "default" stays readable', async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  lab.kube.tokens.add(K8S_TOKEN, { user: VM_SA, groups: ['system:serviceaccounts'] });
  // beside the token, a value that is no secret: it must not become "(sensitive)" wherever the word shows
  lab.vault.putSecret('secret', 'meshvm/cluster-a', { server: lab.kube.url, 'ca.crt': lab.kube.caPem, token: K8S_TOKEN, namespace: 'default' });
  const runlist = () =>
    JSON.stringify({
      name: 'canaries',
      attributes: { flow: 'classic', namespace: 'vm-ns', serviceAccount: 'vm-sa', cluster: lab.cluster },
      recipes: [{ recipe: 'istio-proxy-user' }, { recipe: 'cluster-env' }, { recipe: 'certs' }, { recipe: './site.ts' }],
    });
  await fs.writeFile(path.join(lab.dir, 'site.ts'), SITE(root, 'namespace: default\nlevel: 1\n'));
  const file = await writeRunlist(lab.dir, 'canaries.yaml', runlist());
  const outputs: string[] = [];
  const run = async (args: string[]) => {
    const result = await meshvm(args, { env: { ...ENV_CANARIES, ...ENV_NOISE } });
    outputs.push(result.stdout, result.stderr);
    return result;
  };
  const first = await run(['converge', file, '--root', root, '--json']);
  t.is(first.exitCode, 0, first.stderr);
  // a change of the file's content: a diff in the report, the old file kept as a backup
  await fs.writeFile(path.join(lab.dir, 'site.ts'), SITE(root, 'namespace: default\nlevel: 2\n'));
  const second = await run(['converge', file, '--root', root, '--json']);
  t.is(second.exitCode, 0, second.stderr);
  await run(['verify', file, '--root', root, '--json']);
  t.regex(second.stdout, /namespace: default/, 'a KV value that is no secret is shown as it is in the diff');
  t.notRegex(second.stdout, /namespace: \(sensitive\)/);

  const vaultTokens = [...lab.vault.state.tokens.values()].map((token) => token.id);
  t.true(vaultTokens.length >= 1, 'a Vault login (kept between runs: keepAccess)');
  const canaries = [...Object.values(ENV_CANARIES), K8S_TOKEN, 'secret-id-lab', ...vaultTokens, ...lab.keyPem.split('\n').filter((l) => l.length > 40)];
  // every file meshvm wrote: reports, backups, state, the children's dumps; the key's own file is where the key belongs
  // and the cluster access kept between runs (keepAccess) is where the tokens belong: root-only, on tmpfs
  const keptAccess = (await filesUnder(root)).filter((f) => f.includes('/run/meshvm/cluster-access/'));
  t.is(keptAccess.length, 1);
  for (const f of keptAccess) t.is((await fs.stat(f)).mode & 0o777, 0o600);
  const written = (await filesUnder(root)).filter((f) => !f.endsWith('/etc/certs/key.pem') && !f.endsWith('/etc/meshvm/secret-id') && !keptAccess.includes(f));
  t.true(
    written.some((f) => f.includes('/var/lib/meshvm/backup/')),
    'a backup was made',
  );
  t.true(written.some((f) => f.endsWith('/var/lib/meshvm/last-run.json')));
  const texts = [...outputs, ...(await Promise.all(written.map((f) => fs.readFile(f, 'utf8'))))];
  const hits = canaries.flatMap((canary) =>
    texts.flatMap((text, i) => (text.includes(canary) ? [`${canary.slice(0, 12)}… in ${written[i - outputs.length] ?? `output ${i}`}`] : [])),
  );
  t.deepEqual(hits, []);
  // the children ran and got a working environment: PATH and the locale, nothing of the caller's secrets
  for (const dump of ['env-dump', 'verify-env']) {
    const env = await fs.readFile(path.join(root, dump), 'utf8');
    t.regex(env, /^PATH=/m, dump);
    t.regex(env, /^LC_ALL=C$/m, dump);
    t.notRegex(env, /^(VAULT_|AWS_|NODE_OPTIONS|KUBECONFIG)/m, dump);
  }
});
