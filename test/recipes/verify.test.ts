// meshvm verify on a converged scratch root, inside a throwaway network namespace: a real dnsmasq answers from the
// converged kubedns, a second dnsmasq stands for the cluster DNS, a TCP listener stands for pilot's load balancer.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa, type ResultPromise } from 'execa';
import { BIN, PROJECT, meshvm, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

async function namespace(t: Parameters<typeof scratchRoot>[0]) {
  const ns = `meshvm-verify-${randomBytes(3).toString('hex')}`;
  await execa('ip', ['netns', 'add', ns]);
  await execa('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  const daemons: ResultPromise[] = [];
  t.teardown(async () => {
    for (const d of daemons) d.kill('SIGKILL');
    await Promise.allSettled(daemons);
    await execa('ip', ['netns', 'del', ns], { reject: false });
  });
  const start = (argv: string[]) => {
    const d = execa('ip', ['netns', 'exec', ns, ...argv], { reject: false });
    daemons.push(d);
    return d;
  };
  return { ns, start };
}

const runlist = JSON.stringify({
  name: 'verify-lab',
  attributes: { flow: 'classic' },
  recipes: [
    { recipe: 'istio-proxy-user' },
    { recipe: 'dns', attributes: { clusterDns: '127.0.0.2', controlPlane: [{ name: 'istio-pilot', address: '127.0.0.3' }, { name: 'istio-ca', address: '127.0.0.5' }], dnsmasq: { manage: false }, resolver: 'none' } },
    { recipe: 'certs', attributes: { source: { from: 'files', rootCert: path.join(PROJECT, 'examples/demo-certs/root-cert.pem'), certChain: path.join(PROJECT, 'examples/demo-certs/cert-chain.pem'), key: path.join(PROJECT, 'examples/demo-certs/key.pem') } } },
  ],
});

test('verify: every check passes on a converged VM, and a closed control-plane port fails with the fix', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const file = await writeRunlist(dir, 'verify.yaml', runlist);
  t.is((await meshvm(['converge', file, '--root', root])).exitCode, 0);
  const { ns, start } = await namespace(t);
  const clusterDns = path.join(dir, 'cluster-dns');
  await fs.mkdir(clusterDns);
  await fs.writeFile(path.join(clusterDns, 'svc'), 'address=/kubernetes.default.svc.cluster.local/10.96.0.1\n');
  start(['dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts', '--bind-interfaces', '--listen-address=127.0.0.2', '--port=53', `--conf-dir=${clusterDns}`, '--pid-file=']);
  start(['dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts', '--bind-interfaces', '--listen-address=127.0.0.1', '--port=53', `--conf-dir=${path.join(root, 'etc/dnsmasq.d')}`, '--pid-file=']);
  const pilot = start([process.execPath, '-e', "require('net').createServer((s) => s.end()).listen(15011, '127.0.0.3')"]);
  await new Promise((resolve) => setTimeout(resolve, 700));

  const verify = () => execa('ip', ['netns', 'exec', ns, process.execPath, BIN, 'verify', file, '--root', root, '--resolver', '127.0.0.1', '--json'], { reject: false });
  const good = await verify();
  const report = JSON.parse(String(good.stdout));
  t.is(good.exitCode, 0, String(good.stdout));
  t.true(report.ok);
  t.deepEqual(report.checks.map((c: { check: string }) => c.check), ['dns', 'dns', 'dns', 'dns', 'dns', 'control plane', 'certs', 'certs', 'certs']);
  t.regex(report.checks[0].detail, /istio-pilot resolves to 127\.0\.0\.3/);
  t.regex(report.checks[4].detail, /kubernetes\.default\.svc\.cluster\.local \(a cluster name\) resolves to 10\.96\.0\.1/);

  pilot.kill('SIGKILL');
  await pilot;
  await fs.chmod(path.join(root, 'etc/certs/key.pem'), 0o644);
  const bad = await verify();
  t.is(bad.exitCode, 1);
  const failed = JSON.parse(String(bad.stdout)).checks.filter((c: { ok: boolean }) => !c.ok);
  t.deepEqual(failed.map((c: { check: string; detail: string }) => `${c.check}: ${c.detail}`), [
    'control plane: istio-pilot.istio-system:15011 (127.0.0.3) does not accept a connection: connect ECONNREFUSED 127.0.0.3:15011',
    'certs: /etc/certs/key.pem mode 0644, not 0600',
  ]);
  t.truthy(failed[0].fix);
});
