// The README's least-privilege Role (the Kubernetes access an operator stores in Vault for the VM), taken from the README
// itself and given to a token of the Kubernetes API stand-in (test/stand-ins/kubernetes.ts, standing for an API server's
// RBAC): it mints the workload's own istio-token and cannot mint one for any other service account.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'yaml';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import { PROJECT } from '../helpers/scratch.ts';
import { startKubernetes } from '../stand-ins/index.ts';
import type { RbacRule } from '../stand-ins/index.ts';

const SYSTEM = 'istio-system';
const WORKLOAD = { namespace: 'vm-ns', serviceAccount: 'vm-sa', name: 'reviews-vm' };
const USER = 'system:serviceaccount:vm-ns:meshvm-vm';

/** The rules of the README's Role block, each in the namespace its "# Role in ..." line says, placeholders filled in. */
async function readmeRules(): Promise<RbacRule[]> {
  const readme = await fs.readFile(path.join(PROJECT, 'README.md'), 'utf8');
  const block = /```yaml\n(# Role in the system namespace[\s\S]*?)```/.exec(readme)?.[1];
  if (!block) throw new Error('README.md has no ```yaml block starting "# Role in the system namespace"');
  const rules: RbacRule[] = [];
  let namespaces: string[] | undefined = [SYSTEM];
  for (const line of block.split('\n')) {
    if (line.startsWith("# Role in the workload's namespace")) namespaces = [WORKLOAD.namespace];
    if (line.startsWith('# ClusterRole')) namespaces = undefined;
    if (!line.startsWith('- {')) continue;
    const filled = line.replace(/#.*$/, '').replaceAll('"<serviceAccount>"', WORKLOAD.serviceAccount).replaceAll('"<workload>"', WORKLOAD.name);
    const [rule] = parse(filled) as [{ apiGroups: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] }];
    rules.push({ ...rule, ...(namespaces && { namespaces }) });
  }
  return rules;
}

test("the README's Role mints the workload's own token, and no other service account's", async (t) => {
  const rules = await readmeRules();
  t.true(
    rules.some((r) => r.resources.includes('serviceaccounts/token')),
    'the Role has the TokenRequest rule',
  );
  const kube = await startKubernetes({
    tokens: { 'readme-role-token': { user: USER } },
    rbac: { [USER]: rules },
    serviceAccounts: [`${WORKLOAD.namespace}/${WORKLOAD.serviceAccount}`, `${WORKLOAD.namespace}/other-sa`, `${WORKLOAD.namespace}/default`],
  });
  t.teardown(() => kube.stop());
  const client = new KubernetesClient({ server: kube.url, caPem: kube.caPem!, token: 'readme-role-token', retry: { attempts: 1, baseMs: 1, maxMs: 1 } });
  const own = await client.requestToken({ namespace: WORKLOAD.namespace, serviceAccount: WORKLOAD.serviceAccount });
  t.true(own.token.length > 0);
  for (const other of ['other-sa', 'default']) {
    await t.throwsAsync(
      client.requestToken({ namespace: WORKLOAD.namespace, serviceAccount: other }),
      { message: new RegExp(`may not create serviceaccounts/token "${other}" in namespace vm-ns`) },
      other,
    );
  }
});
