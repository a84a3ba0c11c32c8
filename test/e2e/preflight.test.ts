// The case on a booted Debian 12 with meshvm baked in: the shipped istio-vm runlist with a wrong sha256 for the
// sidecar .deb is refused in preflight, with one line and the guest's files as they were (no account, no dnsmasq, no
// resolver switch, no cluster.env); the same runlist with the right sha256 then converges.
// The far side is the lab of test/e2e/lab.ts: Vault, the Kubernetes API, istiod and the artifact store as stand-ins.
import test from 'ava';
import { bootBaked, e2eGate, ensureArtifact, labNodeYaml, run, type MeshGuest } from './lab.ts';
import type { Guest } from '../helpers/guest/container.ts';

const ok = await e2eGate(test, 'preflight');
const serial = ok ? test.serial : test.serial.skip;

const MESHVM = '/usr/local/bin/meshvm';
const RUNLIST = '/etc/meshvm/runlist.yaml';
const NODE = '/etc/meshvm/node.yaml';

/**
 * The guest's files: path, type, mode and owner, a file's size and mtime, a link's target; not a directory's mtime (it
 * records an entry made and removed again); not the kernel's, /run, /tmp, the logs, or /etc/meshvm (the test's inputs).
 */
async function tree(g: Guest): Promise<string[]> {
  // pruned: the kernel's and runtime trees, logs, meshvm's own input, and V8's compiled code of meshvm (bin/compile-cache.js)
  const prune = ['/proc', '/sys', '/dev', '/run', '/tmp', '/var/tmp', '/var/log', '/etc/meshvm', '/var/cache/meshvm/compile-cache']
    .map((p) => `-path ${p}`)
    .join(' -o ');
  const print = `\\( -type f -printf '%p f %m %U:%G %s %T@\\n' \\) -o \\( -type l -printf '%p l %l\\n' \\) -o -printf '%p %y %m %U:%G\\n'`;
  // the directory that holds it is left out too (a download kept there would still show as its own line)
  return (await run(g, ['sh', '-c', `find / -xdev \\( ${prune} \\) -prune -o ${print} | sort`], 300_000))
    .split('\n')
    .filter((line) => !line.startsWith('/var/cache/meshvm '));
}

let mg: MeshGuest | undefined;

if (ok) {
  test.before('boot a guest with meshvm in its image and the istio-vm runlist', async (t) => {
    t.timeout(20 * 60_000, 'building the image and the artifact the first time');
    await ensureArtifact((line) => t.log(line));
    mg = await bootBaked({ log: (line) => t.log(line) });
    await mg.guest.writeFile(RUNLIST, await run(mg.guest, [MESHVM, 'runlist', 'istio-vm']));
  });
  test.after.always('stop the guest and its lab', async () => {
    await mg?.stop();
  });
}

serial('istio-vm with a wrong sha256 for the sidecar .deb: one line, nothing changed; with the right one it converges', async (t) => {
  t.timeout(10 * 60_000);
  const g = mg!.guest;
  const wrong = 'e'.repeat(64);
  await g.writeFile(NODE, labNodeYaml({ deb: { sha256: wrong } }), { mode: 0o600 });
  const before = await tree(g);
  const started = Date.now();
  const bad = await g.exec([MESHVM, 'converge', RUNLIST], { timeoutMs: 300_000, env: { NO_COLOR: '1' } });
  t.log(`refused in ${Date.now() - started} ms; stdout ${bad.stdout.split('\n').filter(Boolean).length} lines, stderr:\n${bad.stderr}`);
  t.is(bad.exitCode, 1);
  const errors = bad.stderr.split('\n').filter(Boolean);
  t.is(errors.length, 1, bad.stderr);
  t.regex(
    errors[0]!,
    new RegExp(
      `^meshvm: preflight: package\\[istio-sidecar\\](?: \\(declared at [^)]+\\))?: the download of \\S+ has sha256 ${mg!.deb.sha256}, not the ${wrong} the spec requires; refusing it; nothing was changed$`,
    ),
  );
  t.notRegex(bad.stdout, /FAILED|changed/, 'no resource ran');
  t.deepEqual(await tree(g), before, 'no account, no dnsmasq, no resolver switch, no cluster.env, no cache, no report');
  t.deepEqual((await mg!.lab.stats()).workloadGroups, [], 'nothing registered');

  await g.writeFile(NODE, labNodeYaml(mg!), { mode: 0o600 });
  const good = await g.exec([MESHVM, 'converge', RUNLIST, '--json'], { timeoutMs: 300_000 });
  t.is(good.exitCode, 0, good.stderr);
  const report = JSON.parse(good.stdout) as { outcome: string; summary: { changed: number } };
  t.is(report.outcome, 'changed');
  t.log(`then converged: ${report.summary.changed} resources changed`);
});
