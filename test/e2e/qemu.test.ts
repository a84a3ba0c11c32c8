// Optional (MESHVM_TEST_QEMU=1): the cloud-init scenario in a full VM, a real kernel boot under qemu, to measure
// boot-to-converged where the container's shortcuts (a shared kernel, a ready network) do not apply. The far side runs
// on the loopback of a throwaway network namespace, reached from the VM through qemu's guestfwd at 10.0.2.100.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { ensureRootfs, testCacheDir } from '../helpers/guest/rootfs.ts';
import {
  cloudAround,
  e2eGate,
  ensureArtifact,
  LAB,
  labValues,
  prepareArtifacts,
  renderUserData,
  skipBecause,
  startLab,
  type Lab,
  type RunReport,
} from './lab.ts';
import { makePki } from '../stand-ins/index.ts';

const VM_IMAGE = { extraPackages: ['curl', 'linux-image-cloud-amd64', 'initramfs-tools'] };
const PUBLIC = '10.0.2.100';
const KUBE_PORT = 6443;

const canBoot = await e2eGate(test, 'a full VM under qemu');
let reason: string | undefined;
if (canBoot) {
  if (process.env.MESHVM_TEST_QEMU !== '1') reason = 'set MESHVM_TEST_QEMU=1 to boot a full VM under qemu (about 3 to 5 minutes under TCG)';
  else {
    for (const [tool, pkg] of [
      ['qemu-system-x86_64', 'qemu-system-x86'],
      ['qemu-img', 'qemu-utils'],
      ['cloud-localds', 'cloud-image-utils'],
      ['socat', 'socat'],
      ['debugfs', 'e2fsprogs'],
    ] as const) {
      if ((await execa('sh', ['-c', `command -v ${tool}`], { reject: false })).exitCode !== 0) reason = `${tool} is missing (apt-get install ${pkg})`;
    }
  }
  if (reason) skipBecause(test, 'a full VM under qemu', reason);
}
const vmTest = canBoot && !reason ? test : test.skip;

/** KVM where the CPU offers it, else TCG (the /dev/kvm on these machines does not boot Debian's kernel). */
function accel(): string {
  if (process.env.MESHVM_TEST_QEMU_ACCEL) return process.env.MESHVM_TEST_QEMU_ACCEL;
  return /\b(vmx|svm)\b/.test(readFileSync('/proc/cpuinfo', 'utf8')) && existsSync('/dev/kvm') ? 'kvm' : 'tcg';
}

/** The image's root filesystem as an ext4 disk, cached beside it (built once: mkfs.ext4 -d). */
async function vmDisk(rootfs: string, log: (line: string) => void): Promise<string> {
  const disk = path.join(testCacheDir(), `vm-${path.basename(rootfs)}.raw`);
  if (
    await fs.stat(disk).then(
      () => true,
      () => false,
    )
  )
    return disk;
  const temp = `${disk}.${process.pid}`;
  const started = Date.now();
  await execa('truncate', ['-s', '3G', temp]);
  await execa('mkfs.ext4', ['-q', '-F', '-L', 'meshvm-root', '-d', rootfs, temp], { timeout: 600_000 });
  await fs.rename(temp, disk);
  log(`made the VM disk ${disk} in ${Date.now() - started} ms`);
  return disk;
}

vmTest('a full VM: the example user-data converges istio-vm at boot (boot-to-converged under qemu)', async (t) => {
  t.timeout(30 * 60_000);
  await ensureArtifact((line) => t.log(line));
  const rootfs = await ensureRootfs({ ...VM_IMAGE, log: (line) => t.log(line) });
  const disk = await vmDisk(rootfs, (line) => t.log(line));
  const boot = await fs.readdir(path.join(rootfs, 'boot'));
  const kernel = path.join(rootfs, 'boot', boot.find((f) => f.startsWith('vmlinuz-'))!);
  const initrd = path.join(rootfs, 'boot', boot.find((f) => f.startsWith('initrd.img-'))!);

  const workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-qemu-'));
  const netns = `meshvm-qemu-${process.pid}-${randomBytes(3).toString('hex')}`;
  let lab: Lab | undefined;
  let qemu: ReturnType<typeof execa> | undefined;
  try {
    const pki = await makePki([PUBLIC]);
    const prepared = await prepareArtifacts(workDir, pki);
    const userData = (await renderUserData(labValues(prepared, PUBLIC))) + cloudAround(pki.caPem, { powerOff: true });
    await fs.writeFile(path.join(workDir, 'user-data'), userData);
    await fs.writeFile(path.join(workDir, 'meta-data'), `instance-id: iid-meshvm-qemu-${Date.now()}\nlocal-hostname: meshvm-vm\n`);
    await execa('cloud-localds', [path.join(workDir, 'seed.iso'), path.join(workDir, 'user-data'), path.join(workDir, 'meta-data')]);
    const overlay = path.join(workDir, 'overlay.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', disk, '-F', 'raw', overlay]);

    await execa('ip', ['netns', 'add', netns]);
    await execa('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    lab = await startLab({ netns }, { artifactDir: prepared.artifactDir, artifactPki: pki, vm: { public: { address: PUBLIC, kubePort: KUBE_PORT, pki } } });
    const forward = (port: number) => `guestfwd=tcp:${PUBLIC}:${port}-cmd:socat - TCP:127.0.0.1:${port}`;
    const consoleLog = path.join(workDir, 'console.log');
    const launchedAt = Date.now();
    // unshare: qemu and the socat it starts per connection die and are reaped together (this host's PID 1 reaps nothing)
    qemu = execa(
      'ip',
      [
        'netns',
        'exec',
        netns,
        'unshare',
        '--pid',
        '--fork',
        '--kill-child',
        '--',
        'qemu-system-x86_64',
        '-accel',
        accel(),
        '-cpu',
        'qemu64',
        '-smp',
        '2',
        '-m',
        '1024',
        '-display',
        'none',
        '-no-reboot',
        '-kernel',
        kernel,
        '-initrd',
        initrd,
        '-append',
        'console=ttyS0 root=/dev/vda rw',
        '-drive',
        `file=${overlay},if=virtio,format=qcow2`,
        '-drive',
        `file=${path.join(workDir, 'seed.iso')},if=virtio,format=raw,readonly=on`,
        '-netdev',
        `user,id=n0,restrict=on,${[LAB.vaultPort, LAB.artifactPort, KUBE_PORT].map(forward).join(',')}`,
        '-device',
        'virtio-net-pci,netdev=n0',
        '-serial',
        `file:${consoleLog}`,
      ],
      { reject: false, stdin: 'ignore', all: true, timeout: 25 * 60_000 },
    );
    const exited = await qemu;
    const ranMs = Date.now() - launchedAt;
    const consoleText = await fs.readFile(consoleLog, 'utf8').catch(() => '');
    t.is(exited.exitCode, 0, `qemu: ${exited.all}\nconsole (tail):\n${consoleText.split('\n').slice(-40).join('\n')}`);

    // the VM powered itself off after cloud-init: read what it left on its disk
    const raw = path.join(workDir, 'disk.raw');
    await execa('qemu-img', ['convert', '-O', 'raw', overlay, raw]);
    const cat = async (file: string) => (await execa('debugfs', ['-R', `cat ${file}`, raw], { reject: false })).stdout;
    const output = await cat('/var/log/cloud-init-output.log');
    const report = JSON.parse((await cat('/var/lib/meshvm/last-run.json')) || '{}') as Partial<RunReport>;
    t.is(report.outcome, 'changed', `cloud-init-output.log:\n${output.split('\n').slice(-40).join('\n')}`);
    t.is(report.summary?.failed, 0);
    const stats = await lab.stats();
    t.deepEqual(
      stats.artifactRequests.map((r) => `${r.path} ${r.status}`),
      ['/meshvm 200', '/istio-sidecar.deb 200'],
    );
    const upAt = (label: string) => new RegExp(`Cloud-init v\\. \\S+ ${label}.* Up ([\\d.]+) seconds`).exec(output)?.[1];
    t.log(
      `qemu (${accel()}): boot-to-converged ${Date.parse(report.finishedAt!) - launchedAt} ms (the converge itself ${report.summary?.seconds} s, ` +
        `${report.summary?.changed} of ${report.summary?.total} resources changed); cloud-init's final stage began at ${upAt("running 'modules:final'")} s of uptime; ` +
        `boot, converge and poweroff ${ranMs} ms`,
    );
  } finally {
    qemu?.kill('SIGKILL'); // nothing when it has exited
    await qemu?.catch(() => {});
    await lab?.stop();
    await execa('ip', ['netns', 'delete', netns], { reject: false });
    await fs.rm(workDir, { recursive: true, force: true });
  }
});
