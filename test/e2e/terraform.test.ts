// End to end with Terraform: `terraform apply` of examples/terraform converges a booted guest over ssh (remote-exec), and
// a failing converge fails the apply. Terraform runs on the host, inside the guest's network namespace, offline.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { bootBaked, e2eGate, skipBecause, ensureArtifact, labNodeYaml, lastRun, PROJECT, run, sidecarStarts, type MeshGuest } from './lab.ts';

const canBoot = await e2eGate(test, 'Terraform remote-exec');
const terraform = canBoot
  ? await execa('terraform', ['version'], { reject: false, env: { TF_CLI_CONFIG_FILE: '/dev/null', CHECKPOINT_DISABLE: '1' } }).catch((error: Error) => ({
      exitCode: -1,
      stdout: '',
      stderr: error.message,
    }))
  : undefined;
const hasTerraform = terraform !== undefined && terraform.exitCode === 0;
if (canBoot && !hasTerraform) {
  skipBecause(
    test,
    'Terraform remote-exec',
    `terraform is not on PATH (${terraform?.stderr.trim().split('\n')[0] || 'not found'}); these machines have it from no package`,
  );
}
const serial = canBoot && hasTerraform ? test.serial : test.serial.skip;

let mg: MeshGuest | undefined;
let dir: string | undefined;

if (canBoot && hasTerraform) {
  test.before('boot a guest with meshvm in its image, and copy the example', async (t) => {
    t.timeout(20 * 60_000, 'building the image and the artifact the first time');
    t.log(String(terraform!.stdout).split('\n')[0]);
    await ensureArtifact((line) => t.log(line));
    mg = await bootBaked({ log: (line) => t.log(line) });
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-terraform-'));
    await fs.cp(path.join(PROJECT, 'examples/terraform'), dir, { recursive: true });
    await fs.writeFile(path.join(dir, 'empty.tfrc'), '');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'meshvm-e2e', '-f', path.join(dir, 'id_ed25519')]);
    await mg.guest.writeFile('/root/.ssh/authorized_keys', await fs.readFile(path.join(dir, 'id_ed25519.pub')), { mode: 0o600 });
    await run(mg.guest, ['chmod', '0700', '/root/.ssh']);
    t.is((await mg.guest.exec(['systemctl', 'is-active', 'ssh.service'])).stdout, 'active');
    const init = await tf(['init', '-input=false', '-no-color']);
    if (init.exitCode !== 0) throw new Error(`terraform init: ${init.all}`);
  });
  test.after.always('stop the guest, remove the copy', async () => {
    await mg?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });
}

/** terraform in the guest's network namespace (sshd listens on 127.0.0.1:22 there), offline, with an empty CLI config. */
function tf(args: string[]) {
  return execa('ip', ['netns', 'exec', mg!.guest.netns, 'terraform', ...args], {
    cwd: dir!,
    reject: false,
    all: true,
    timeout: 300_000,
    env: { TF_CLI_CONFIG_FILE: path.join(dir!, 'empty.tfrc'), TF_IN_AUTOMATION: '1', TF_INPUT: '0', CHECKPOINT_DISABLE: '1', NO_COLOR: '1' },
  });
}

const vars = (nodeYaml: string) => [
  '-var',
  'host=127.0.0.1',
  '-var',
  'port=22',
  '-var',
  `private_key_file=${path.join(dir!, 'id_ed25519')}`,
  '-var',
  `node_yaml=${nodeYaml}`,
];

serial('terraform apply converges the booted guest over ssh; a failing converge fails the apply', async (t) => {
  const m = mg!;
  const g = m.guest;
  const started = Date.now();
  const apply = await tf(['apply', '-auto-approve', '-input=false', '-no-color', ...vars(labNodeYaml(m))]);
  t.log(`terraform apply (remote-exec converge of a fresh VM): ${Date.now() - started} ms`);
  t.is(apply.exitCode, 0, apply.all);
  t.regex(String(apply.all), /terraform_data\.meshvm \(remote-exec\):.*converge/);
  t.regex(String(apply.all), /Apply complete! Resources: 1 added, 0 changed, 0 destroyed\./);

  const report = (await lastRun(g))!;
  t.is(report.outcome, 'changed');
  t.is(report.summary.failed, 0);
  t.is(await run(g, ['stat', '-c', '%U:%G %a', '/etc/meshvm/node.yaml']), 'root:root 600');
  t.false((await g.exec(['test', '-e', '/tmp/meshvm-node.yaml'])).exitCode === 0, 'the uploaded copy is removed');
  for (const unit of ['istio.service', 'meshvm.timer']) t.is((await g.exec(['systemctl', 'is-active', unit])).stdout, 'active', unit);
  t.is((await g.exec(['systemctl', 'is-active', 'dnsmasq.service'])).stdout, 'inactive', "cluster names are the sidecar's DNS proxy's");
  t.is(await sidecarStarts(g), 1);

  // nothing changed: the trigger is the same, so the apply has nothing to do
  const again = await tf(['apply', '-auto-approve', '-input=false', '-no-color', ...vars(labNodeYaml(m))]);
  t.is(again.exitCode, 0, again.all);
  t.regex(String(again.all), /No changes\./);

  // a node file naming a Vault path that does not exist: the converge exits 1, and so does the apply
  const failing = await tf(['apply', '-auto-approve', '-input=false', '-no-color', ...vars(labNodeYaml(m, 'meshvm/nope'))]);
  t.not(failing.exitCode, 0, failing.all);
  t.regex(String(failing.all), /no KV v2 secret at secret\/data\/meshvm\/nope/);
  t.regex(String(failing.all), /remote-exec provisioner error|error executing "\/tmp\/terraform_\d+\.sh": Process exited with status 1/);
  // the failed run's report is the machine's last run: it says failed, with its error, and changed nothing
  const failed = JSON.parse(String(await g.readFile('/var/lib/meshvm/last-run.json')));
  t.is(failed.outcome, 'failed');
  t.regex(failed.error, /no KV v2 secret at secret\/data\/meshvm\/nope/);
  t.is(failed.summary.changed, 0, 'the failed converge planned nothing');
  t.is(await sidecarStarts(g), 1, 'and touched nothing');
  t.is((await g.exec(['systemctl', 'is-active', 'istio.service'])).stdout, 'active');
});
