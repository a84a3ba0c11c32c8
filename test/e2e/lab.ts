// What the end-to-end tests share: the built artifact, the istio-sidecar .deb, the example user-data rendered, and a
// booted guest with its far side (stand-ins, istiod, artifact store, the DHCP nameserver) running in the guest's network
// namespace, where the guest also has a NIC with the address a DHCP server would give it.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import type { ExecutionContext, TestFn } from 'ava';
import { execa, type ResultPromise } from 'execa';
import { bootContainer, canBootContainers, type Guest } from '../helpers/guest/container.ts';
import { ensureRootfs, type RootfsOptions } from '../helpers/guest/rootfs.ts';
import { testPki, type TestPki } from '../stand-ins/index.ts';
import { until } from '../helpers/poll.ts';
import pkg from '../../package.json' with { type: 'json' };
import type { LabConfig, LabReady, LabRequest, LabStats } from './lab-server.ts';

export const PROJECT = path.resolve(import.meta.dirname, '../..');
export const DIST = path.join(PROJECT, 'dist');
export const EXECUTABLE = path.join(DIST, 'meshvm');
export const BUNDLE = path.join(DIST, 'meshvm.mjs');
const LAB_SERVER = path.join(import.meta.dirname, 'lab-server.ts');
const RELAY = path.join(import.meta.dirname, 'relay.ts');
const SIDECAR_TREE = path.join(import.meta.dirname, 'fixtures/istio-sidecar');

/** The guest image: the harness's Debian 12 plus curl, which Debian's cloud images have and the example's runcmd uses. */
export const IMAGE: RootfsOptions = { extraPackages: ['curl'] };

/** Fixed addresses of the lab: the user-data is rendered before the guest's namespace exists. */
export const LAB = {
  vaultPort: 8200,
  artifactPort: 8443,
  /** The east-west gateway's LoadBalancer IP (istiod, port 15012), past the VM's gateway. */
  eastwest: '10.150.0.6',
  /** The VM's default gateway: the far side of its NIC. */
  gateway: '10.0.2.2',
  /** The nameserver a DHCP server would have given the VM. */
  upstreamDns: '10.0.2.3',
  /** The VM's own address (on eth0, a veth whose peer is the namespace's "network"): what istiod registers it at. */
  vmAddress: '10.0.2.15',
  /** The ClusterIP of default/kubernetes, which istiod's name table gives the sidecar's DNS proxy; the upstream's example.org. */
  kubernetesIp: '10.96.0.1',
  exampleOrgIp: '203.0.113.10',
  /** The response-wrapping token of the user-data (the lab's Vault wraps the AppRole secret_id in it). */
  wrappingToken: 'hvs.lab-wrapped-secret-id-0000000000',
} as const;

export const WORKLOAD = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', port: 9080 } as const;

// ---------------------------------------------------------------------------------------------------------------
// Gate

/** When containers cannot be booted here, registers a skipped test whose title says why; returns whether they can run. */
export async function e2eGate(test: { skip: (title: string, fn: (t: ExecutionContext) => void) => void }, what: string): Promise<boolean> {
  const gate = await canBootContainers();
  if (!gate.ok) skipBecause(test, what, gate.reason);
  return gate.ok;
}

/** Says why `what` cannot run here, and registers a skipped test whose title says it (a skip is counted as skipped). */
export function skipBecause(test: { skip: (title: string, fn: (t: ExecutionContext) => void) => void }, what: string, reason: string): void {
  console.log(`meshvm e2e (${what}) skipped: ${reason}`);
  test.skip(`${what}: skipped on this machine (${reason})`, () => {});
}

/**
 * The gate, and when it opens, one guest for the file's tests: `boot` and then `ready` run before them (the image and the
 * artifact built first if need be), the guest is stopped after them (also when `ready` threw). `serial` is test.serial, or
 * test.serial.skip when the gate is shut.
 */
export async function guestPerFile(
  test: TestFn,
  what: string,
  title: string,
  boot: (log: (line: string) => void) => Promise<MeshGuest>,
  ready?: (mg: MeshGuest) => Promise<void>,
): Promise<{ serial: TestFn['serial'] | TestFn['serial']['skip']; guest: () => MeshGuest }> {
  const ok = await e2eGate(test, what);
  let mg: MeshGuest | undefined;
  if (ok) {
    test.before(title, async (t) => {
      t.timeout(20 * 60_000, 'building the image and the artifact the first time');
      const log = (line: string) => t.log(line);
      await ensureArtifact(log);
      mg = await boot(log);
      await ready?.(mg);
    });
    test.after.always('stop the guest and its lab', async () => {
      await mg?.stop();
    });
  }
  const guest = (): MeshGuest => mg ?? assert.fail('no guest: the boot before the tests failed');
  return { serial: ok ? test.serial : test.serial.skip, guest };
}

// ---------------------------------------------------------------------------------------------------------------
// The artifact

const SOURCES = ['engine', 'resources', 'recipes', 'clients', 'bin', 'runlists', 'index.ts', 'package.json', 'package-lock.json', 'scripts/build.ts'];

async function newestSource(): Promise<number> {
  let newest = 0;
  async function walk(p: string): Promise<void> {
    const st = await fs.stat(p).catch(() => undefined);
    if (!st) return;
    if (st.isDirectory()) {
      for (const name of await fs.readdir(p)) await walk(path.join(p, name));
    } else newest = Math.max(newest, st.mtimeMs);
  }
  for (const s of SOURCES) await walk(path.join(PROJECT, s));
  return newest;
}

/** Whether dist/ lacks the executable or the bundle, or is older than the sources. */
export async function artifactStale(): Promise<boolean> {
  const [exe, bundle] = await Promise.all([EXECUTABLE, BUNDLE].map((f) => fs.stat(f).catch(() => undefined)));
  if (!exe || !bundle) return true;
  return Math.min(exe.mtimeMs, bundle.mtimeMs) < (await newestSource());
}

/**
 * `npm run build` when dist/ is missing or stale (CI runs the tests from a clean clone), once across the test files
 * running in parallel: a flock, and a second look once it is held.
 */
export async function ensureArtifact(log: (line: string) => void = () => {}): Promise<{ executable: string; bundle: string }> {
  if (await artifactStale()) {
    const started = Date.now();
    const script = `import { artifactStale } from ${JSON.stringify(path.join(import.meta.dirname, 'lab.ts'))};
      if (await artifactStale()) { const { execa } = await import('execa'); await execa(process.execPath, ['scripts/build.ts'], { cwd: ${JSON.stringify(PROJECT)}, stdio: 'inherit' }); }`;
    const r = await execa('flock', [path.join(os.tmpdir(), 'meshvm-e2e-build.lock'), process.execPath, '--input-type=module', '-e', script], {
      reject: false,
      all: true,
      timeout: 600_000,
    });
    if (r.exitCode !== 0) throw new Error(`building the artifact failed:\n${r.all}`);
    log(`artifact built (or waited for) in ${Date.now() - started} ms`);
  }
  return { executable: EXECUTABLE, bundle: BUNDLE };
}

export async function sha256File(file: string): Promise<string> {
  return createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex');
}

// ---------------------------------------------------------------------------------------------------------------
// The istio-sidecar .deb

/** Builds the stand-in istio-sidecar .deb from test/e2e/fixtures/istio-sidecar with dpkg-deb; files owned by root. */
export async function buildSidecarDeb(outDir: string): Promise<{ file: string; sha256: string }> {
  const tree = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-deb-'));
  try {
    await fs.cp(SIDECAR_TREE, tree, { recursive: true });
    for (const [file, mode] of [
      ['DEBIAN/postinst', 0o755],
      ['usr/local/bin/istio-start.sh', 0o755],
      ['usr/local/bin/pilot-agent', 0o755],
      ['DEBIAN/control', 0o644],
      ['lib/systemd/system/istio.service', 0o644],
    ] as const) {
      await fs.chmod(path.join(tree, file), mode);
    }
    await execa('find', [tree, '-type', 'd', '-exec', 'chmod', '0755', '{}', '+']);
    const file = path.join(outDir, 'istio-sidecar.deb');
    await execa('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', tree, file]);
    return { file, sha256: await sha256File(file) };
  } finally {
    await fs.rm(tree, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The example user-data

export const USER_DATA = path.join(PROJECT, 'examples/cloud-init/user-data.yaml');

/** The example with every ${name} filled in (as Terraform's templatefile would); a placeholder left over is an error. */
export async function renderUserData(values: Record<string, string>): Promise<string> {
  const text = await fs.readFile(USER_DATA, 'utf8');
  const missing = new Set<string>();
  const out = text.replace(/\$\{(\w+)\}/g, (_, name: string) => {
    if (!(name in values)) missing.add(name);
    return values[name] ?? '';
  });
  if (missing.size) throw new Error(`examples/cloud-init/user-data.yaml has placeholders the test does not fill: ${[...missing].join(', ')}`);
  return out;
}

/**
 * What the test adds to the example, standing in for the cloud around a real VM: cloud-init's first stage waits until
 * the far side listens (a VM's network coming up), /etc/resolv.conf gets the nameserver a DHCP server would give, and the
 * artifact store's private CA is trusted (cloud-init's ca_certs, as the example's header says).
 */
export function cloudAround(artifactCaPem: string, vm?: { powerOff: boolean }): string {
  const pem = artifactCaPem
    .trim()
    .split('\n')
    .map((l) => `      ${l}`)
    .join('\n');
  const network = vm
    ? [
        // a full VM on qemu's user network: the address its DHCP server would give (cloud-init's network config is off)
        '    dev=$(ls /sys/class/net | grep -v "^lo$" | head -n 1)',
        '    ip link set "$dev" up && ip addr add 10.0.2.15/24 dev "$dev" && ip route add default via 10.0.2.2',
      ]
    : [
        // a container: wait until the far side listens in the guest's namespace
        '    i=0',
        '    while [ ! -e /mnt/meshvm-lab/ready ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done',
      ];
  return [
    '',
    "# --- added by meshvm's end-to-end test, not part of the example: the cloud around the VM ---",
    'bootcmd:',
    '  - |',
    ...network,
    `    printf 'nameserver ${LAB.upstreamDns}\\n' > /etc/resolv.conf`,
    'ca_certs:',
    '  trusted:',
    '    - |',
    pem,
    ...(vm?.powerOff ? ['power_state: { mode: poweroff, condition: true, timeout: 30 }'] : []),
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// The far side, in the guest's network namespace

export interface Lab {
  ready: LabReady;
  vaultStop(): Promise<void>;
  vaultStart(): Promise<void>;
  stats(): Promise<LabStats>;
  /**
   * What the DHCP nameserver (LAB.upstreamDns, standing for the VPC's resolver) answers besides example.org: A records,
   * and CNAMEs to one of them (as Route53's resolver answers a private hosted zone); restarts it and waits until it
   * answers. Container guests only.
   */
  upstreamDns(answers: UpstreamAnswers): Promise<void>;
  /**
   * The east-west gateway's load balancer moves to `address`: istiod answers there instead (the old address is dropped,
   * with the connections made through it), and the upstream DNS answers the load balancer's hostname with it.
   */
  moveEastwest(address: string): Promise<void>;
  /** Kills and waits for every process of the lab. Idempotent. */
  stop(): Promise<void>;
}

export interface UpstreamAnswers {
  hosts?: Record<string, string>;
  /** alias → target (a name of `hosts`), with the TTL dnsmasq answers them with. */
  cnames?: Record<string, { target: string; ttl: number }>;
}

export interface LabOptions {
  artifactDir: string;
  artifactPki: TestPki;
  vaultDown?: boolean;
  vm?: { public: NonNullable<LabConfig['public']> };
  /** The east-west gateway publishes this hostname (an AWS load balancer); the upstream DNS answers it with LAB.eastwest. */
  eastwestHostname?: string;
  aws?: LabConfig['aws'];
}

/**
 * Starts the stand-ins and the artifact server inside a network namespace (a guest's), and with a container also what
 * the guest reaches there: istiod's port on the gateway's address, the upstream DNS, and the VM's own NIC (eth0). A full
 * VM (`vm`) reaches the servers through qemu's guestfwd at vm.public.address instead.
 */
export async function startLab(where: { netns: string }, opts: LabOptions): Promise<Lab> {
  const daemons: ResultPromise[] = [];
  const start = (argv: string[], stdio: 'pipe' | 'ignore' = 'ignore') => {
    const child = execa('ip', ['netns', 'exec', where.netns, ...argv], {
      reject: false,
      stdin: stdio === 'pipe' ? 'pipe' : 'ignore',
      stdout: stdio === 'pipe' ? 'pipe' : 'ignore',
      stderr: 'pipe',
      cleanup: true,
    });
    daemons.push(child);
    return child;
  };
  const dig = async (server: string, name: string) =>
    (await execa('ip', ['netns', 'exec', where.netns, 'dig', '+short', '+time=1', '+tries=1', `@${server}`, name], { reject: false })).stdout.trim();
  let upstream: ResultPromise | undefined;
  let answering: UpstreamAnswers = {};
  const upstreamDns = async (answers: UpstreamAnswers) => {
    answering = answers;
    if (opts.vm) throw new Error("the upstream DNS is a container guest's");
    if (upstream) {
      upstream.kill('SIGTERM');
      await upstream;
    }
    const hosts = { 'example.org': LAB.exampleOrgIp, ...answers.hosts };
    upstream = start([
      'dnsmasq',
      '--keep-in-foreground',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${LAB.upstreamDns}`,
      '--port=53',
      '--conf-file=/dev/null',
      '--pid-file=',
      ...Object.entries(hosts).map(([name, ip]) => `--host-record=${name},${ip}`),
      ...Object.entries(answers.cnames ?? {}).map(([alias, c]) => `--cname=${alias},${c.target},${c.ttl}`),
    ]);
    for (const [name, ip] of Object.entries(hosts)) {
      await until(async () => (await dig(LAB.upstreamDns, name)) === ip, {
        what: `the upstream DNS answering ${name} with ${ip}`,
        timeoutMs: 10_000,
        intervalMs: 50,
      });
    }
  };
  const eastwestHosts = (address: string): Record<string, string> => (opts.eastwestHostname ? { [opts.eastwestHostname]: address } : {});
  // the network past the VM's NIC: a namespace of its own where istiod's address is (relays, test/e2e/relay.ts)
  const far = opts.vm ? undefined : `${where.netns}-far`;
  const relays = new Map<string, ResultPromise>();
  const relay = async (address: string, socket: string) => {
    const child = execa('ip', ['netns', 'exec', far!, process.execPath, RELAY, address, '15012', socket], {
      reject: false,
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'pipe',
      cleanup: true,
    });
    daemons.push(child);
    relays.set(address, child);
    const listening = new Promise<void>((resolve) => readline.createInterface({ input: child.stdout! }).once('line', () => resolve()));
    await Promise.race([
      listening,
      child.then((r) => {
        throw new Error(`the relay to istiod at ${address}:15012 exited: ${String(r.stderr)}`);
      }),
    ]);
  };
  if (far) {
    await execa('ip', ['netns', 'add', far]);
    await execa('ip', ['-n', far, 'link', 'set', 'lo', 'up']);
    await execa('ip', ['-n', far, 'addr', 'add', `${LAB.eastwest}/32`, 'dev', 'lo']);
    // the VM's NIC: eth0 with the address DHCP would give and its default route to the gateway, the far side's lab0
    await execa('ip', ['-n', where.netns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'lab0', 'netns', far]);
    await execa('ip', ['-n', where.netns, 'addr', 'add', `${LAB.vmAddress}/24`, 'dev', 'eth0']);
    await execa('ip', ['-n', far, 'addr', 'add', `${LAB.gateway}/24`, 'dev', 'lab0']);
    await execa('ip', ['-n', where.netns, 'link', 'set', 'eth0', 'up']);
    await execa('ip', ['-n', far, 'link', 'set', 'lab0', 'up']);
    await execa('ip', ['-n', where.netns, 'route', 'add', 'default', 'via', LAB.gateway, 'dev', 'eth0']);
    // the DHCP nameserver stays on the VM's loopback (its queries reach it as they would a remote one: port 53 by udp)
    await execa('ip', ['-n', where.netns, 'addr', 'add', `${LAB.upstreamDns}/32`, 'dev', 'lo']);
  }

  const config: LabConfig = {
    vaultPort: LAB.vaultPort,
    artifactPort: LAB.artifactPort,
    artifactDir: opts.artifactDir,
    artifactCert: { certPem: opts.artifactPki.certPem, keyPem: opts.artifactPki.keyPem, caPem: opts.artifactPki.caPem },
    wrappingToken: LAB.wrappingToken,
    ...(opts.vm ? { public: opts.vm.public } : { istiodAddress: LAB.eastwest }),
    ...(opts.vaultDown && { vaultDown: true }),
    ...(opts.eastwestHostname && { eastwestHostname: opts.eastwestHostname }),
    ...(opts.aws && { aws: opts.aws }),
  };
  const server = start([process.execPath, LAB_SERVER, JSON.stringify(config)], 'pipe');
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      server.stdin?.end();
      const timer = setTimeout(() => server.kill('SIGKILL'), 5000);
      for (const d of daemons) if (d !== server) d.kill('SIGTERM');
      await Promise.allSettled(daemons);
      clearTimeout(timer);
      if (far) await execa('ip', ['netns', 'delete', far], { reject: false });
    })());

  const pending = new Map<number, (answer: { ok: boolean; result?: unknown; error?: string }) => void>();
  let readyResolve!: (r: LabReady) => void;
  const readyPromise = new Promise<LabReady>((resolve) => (readyResolve = resolve));
  readline.createInterface({ input: server.stdout! }).on('line', (line) => {
    const message = JSON.parse(line) as { ready?: LabReady; id?: number; ok: boolean; result?: unknown; error?: string };
    if (message.ready) readyResolve(message.ready);
    else if (message.id !== undefined) pending.get(message.id)?.(message);
  });
  const exited = server.then((r) => {
    throw new Error(`the lab server exited (${r.exitCode ?? r.signal}): ${String(r.stderr).slice(-2000)}`);
  });
  exited.catch(() => {});
  let ready: LabReady;
  try {
    ready = await Promise.race([
      readyPromise,
      exited,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the lab server did not start within 30 s')), 30_000).unref()),
    ]);
    // the DNS server answers, and istiod listens, before anything asks them
    if (!opts.vm) await upstreamDns({ hosts: eastwestHosts(LAB.eastwest) });
    if (ready.istiodSocket) await relay(LAB.eastwest, ready.istiodSocket);
  } catch (error) {
    await stop();
    throw error;
  }

  let nextId = 0;
  const call = async (command: LabRequest) => {
    const id = ++nextId;
    const answer = new Promise<{ ok: boolean; result?: unknown; error?: string }>((resolve) => pending.set(id, resolve));
    server.stdin!.write(JSON.stringify({ id, ...command }) + '\n');
    const a = await Promise.race([answer, exited]);
    if (!a.ok) throw new Error(`lab ${command.cmd}: ${a.error}`);
    return a.result;
  };
  return {
    ready,
    vaultStop: async () => void (await call({ cmd: 'vault-stop' })),
    vaultStart: async () => void (await call({ cmd: 'vault-start' })),
    stats: async () => (await call({ cmd: 'stats' })) as LabStats,
    upstreamDns,
    moveEastwest: async (address) => {
      if (!far) throw new Error("moving the east-west gateway is a container guest's lab");
      const has = (await execa('ip', ['-n', far, '-4', '-o', 'addr', 'show', 'dev', 'lo'])).stdout.includes(` ${address}/`);
      if (!has) await execa('ip', ['-n', far, 'addr', 'add', `${address}/32`, 'dev', 'lo']);
      await relay(address, (await call({ cmd: 'istiod-move', address })) as string);
      for (const [old, child] of relays) {
        if (old === address) continue;
        child.stdin?.end();
        await child;
        relays.delete(old);
      }
      await upstreamDns({ ...answering, hosts: { ...answering.hosts, ...eastwestHosts(address) } });
    },
    stop,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// A guest booted with the example's user-data

export interface MeshGuest {
  guest: Guest;
  lab: Lab;
  /** Date.now() just before systemd-nspawn was started. */
  launchedAt: number;
  /** ms from launch until the far side listened (cloud-init's first stage waits for it). */
  labReadyMs: number;
  userData: string;
  deb: { file: string; sha256: string };
  executableSha256: string;
  workDir: string;
  /** Stops the guest and the lab, removes the work dir. Idempotent. */
  stop(): Promise<void>;
}

/** Everything a guest needs from the host, made once per test file: the artifacts served, the CA, the .deb. */
export async function prepareArtifacts(
  workDir: string,
  pki?: TestPki,
): Promise<{ artifactDir: string; pki: TestPki; deb: { file: string; sha256: string }; executableSha256: string; meshvmDebSha256: string }> {
  const artifactDir = path.join(workDir, 'artifacts');
  await fs.mkdir(artifactDir, { recursive: true });
  await fs.copyFile(EXECUTABLE, path.join(artifactDir, 'meshvm'));
  await fs.copyFile(await meshvmDeb(workDir), path.join(artifactDir, 'meshvm.deb'));
  const deb = await buildSidecarDeb(artifactDir);
  return {
    artifactDir,
    pki: pki ?? (await testPki({ fresh: true })),
    deb,
    executableSha256: await sha256File(path.join(artifactDir, 'meshvm')),
    meshvmDebSha256: await sha256File(path.join(artifactDir, 'meshvm.deb')),
  };
}

/** meshvm's .deb (what the example installs): npm run package's when newer than the executable, else one made here with xz -1. */
export async function meshvmDeb(workDir: string): Promise<string> {
  const made = path.join(DIST, `meshvm_${pkg.version}_amd64.deb`);
  const [deb, exe] = await Promise.all([made, EXECUTABLE].map((f) => fs.stat(f).catch(() => undefined)));
  if (deb && exe && deb.mtimeMs >= exe.mtimeMs) return made;
  const out = path.join(workDir, 'meshvm-deb');
  await execa(process.execPath, [path.join(PROJECT, 'scripts/package.ts'), '--fast', '--no-rpm', '--outdir', out]);
  return path.join(out, `meshvm_${pkg.version}_amd64.deb`);
}

/** The values the example's placeholders take in the lab (`host`: where the VM reaches the far side). */
export function labValues(a: { meshvmDebSha256: string; deb: { sha256: string } }, host = '127.0.0.1'): Record<string, string> {
  return {
    meshvm_deb_url: `https://${host}:${LAB.artifactPort}/meshvm.deb`,
    meshvm_deb_sha256: a.meshvmDebSha256,
    sidecar_deb_url: `https://${host}:${LAB.artifactPort}/istio-sidecar.deb`,
    sidecar_deb_sha256: a.deb.sha256,
    workload_name: WORKLOAD.name,
    workload_namespace: WORKLOAD.namespace,
    service_account: WORKLOAD.serviceAccount,
    ports: String(WORKLOAD.port),
    vault_address: `https://${host}:${LAB.vaultPort}`,
    vault_kv_path: 'meshvm/cluster-a',
    vault_role_id: 'role-id-lab',
    vault_wrapped_secret_id: LAB.wrappingToken,
  };
}

/**
 * Boots a guest whose NoCloud seed is the example's user-data (rendered, plus the cloud around it), starts its far
 * side, and returns once systemd is up (cloud-init may still be running: see waitForCloudInit / cloudInitStatus).
 */
export async function bootWithExample(
  opts: { vaultDown?: boolean; log?: (line: string) => void; beforeReady?: (guest: Guest) => Promise<void> } = {},
): Promise<MeshGuest> {
  const workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-e2e-'));
  const labDir = path.join(workDir, 'lab');
  await fs.mkdir(labDir);
  const prepared = await prepareArtifacts(workDir);
  const userData = (await renderUserData(labValues(prepared))) + cloudAround(prepared.pki.caPem);
  await ensureRootfs({ ...IMAGE, ...(opts.log && { log: opts.log }) });
  const { guest, launchedAt, owned, stop } = await bootLabGuest(workDir, {
    rootfs: IMAGE,
    seed: { userData },
    binds: [{ host: labDir, guest: '/mnt/meshvm-lab' }],
  });
  let lab: Lab;
  try {
    lab = owned.lab = await startLab(guest, { artifactDir: prepared.artifactDir, artifactPki: prepared.pki, ...(opts.vaultDown && { vaultDown: true }) });
    await opts.beforeReady?.(guest);
    await fs.writeFile(path.join(labDir, 'ready'), '');
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    guest,
    lab,
    launchedAt,
    labReadyMs: Date.now() - launchedAt,
    userData,
    deb: prepared.deb,
    executableSha256: prepared.executableSha256,
    workDir,
    stop,
  };
}

/** Boots a lab guest that owns its work dir: `stop` stops the guest, then the lab once `owned.lab` is set, then removes the dir. */
async function bootLabGuest(workDir: string, boot: Parameters<typeof bootContainer>[0]) {
  const launchedAt = Date.now();
  const guest = await bootContainer(boot).catch(async (error: unknown) => {
    await fs.rm(workDir, { recursive: true, force: true });
    throw error;
  });
  const owned: { lab?: Lab } = {};
  const stop = async () => {
    await guest.stop();
    await owned.lab?.stop();
    await fs.rm(workDir, { recursive: true, force: true });
  };
  return { guest, launchedAt, owned, stop };
}

/** `cloud-init status --wait --long`, without rejecting on an error status (the faults scenario expects one). */
export async function cloudInitStatus(guest: Guest, timeoutMs = 180_000): Promise<{ status: string; text: string }> {
  const r = await guest.exec(['cloud-init', 'status', '--wait', '--long'], { timeoutMs });
  return { status: /^status: (\w+)/m.exec(r.stdout)?.[1] ?? 'unknown', text: `${r.stdout}\n${r.stderr}` };
}

export interface RunReport {
  outcome: string;
  startedAt: string;
  finishedAt: string;
  summary: { total: number; changed: number; failed: number; skipped: number; unchanged: number; seconds: number };
  resources: { ref: string; status: string; changes: string[]; error?: string }[];
  notifications: { ref: string; status: string; because: string[] }[];
}

export async function lastRun(guest: Guest): Promise<RunReport | undefined> {
  const text = await guest.readFile('/var/lib/meshvm/last-run.json');
  return text === undefined ? undefined : (JSON.parse(text) as RunReport);
}

/**
 * Waits until the sidecar's readiness endpoint answers 200 (the stand-in agent has its certificate and name table from
 * istiod), as an operator waits after a start; rejects with the agent's reason after `timeoutMs`.
 */
export async function sidecarReady(guest: Guest, timeoutMs = 30_000): Promise<void> {
  let last = '';
  const probe = ['curl', '-s', '-o', '/dev/stderr', '-w', '%{http_code}', '--max-time', '2', 'http://127.0.0.1:15021/healthz/ready'];
  await until(
    async () => {
      const r = await guest.exec(probe);
      last = `${r.stdout} ${r.stderr}`.trim();
      return r.stdout === '200';
    },
    { what: 'the sidecar to be ready (localhost:15021/healthz/ready)', timeoutMs, intervalMs: 200 },
  ).catch((error: Error) => {
    throw new Error(`${error.message}; it answered: ${last || 'nothing'}`);
  });
}

/** Lines of /var/lib/istio/starts: one per start of the sidecar. */
export async function sidecarStarts(guest: Guest): Promise<number> {
  return ((await guest.readFile('/var/lib/istio/starts')) ?? '').split('\n').filter(Boolean).length;
}

export const changedRefs = (report: RunReport) => report.resources.filter((r) => r.status === 'changed').map((r) => r.ref);

/** A guest command that must succeed; its stdout. */
export async function run(guest: Guest, argv: string[], timeoutMs = 120_000): Promise<string> {
  return (await guest.exec(argv, { check: true, timeoutMs })).stdout;
}

/** What a failed boot looked like, for an assertion message. */
export async function bootDiagnostics(guest: Guest): Promise<string> {
  const log = (await guest.readFile('/var/log/cloud-init-output.log')) ?? '(no cloud-init-output.log)';
  const failed = (await guest.exec(['systemctl', '--failed', '--no-legend', '--plain'])).stdout;
  return `cloud-init-output.log (tail):\n${log.split('\n').slice(-60).join('\n')}\nfailed units: ${failed || 'none'}`;
}

/**
 * Boots a guest as an image with meshvm baked in (no cloud-init): the executable in /usr/local/bin, the Vault AppRole
 * files, the artifact store's CA trusted, the DHCP nameserver in /etc/resolv.conf; its far side running.
 */
export async function bootBaked(opts: { log?: (line: string) => void; lab?: Pick<LabOptions, 'eastwestHostname' | 'aws'> } = {}): Promise<MeshGuest> {
  const workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-e2e-'));
  const prepared = await prepareArtifacts(workDir);
  await ensureRootfs({ ...IMAGE, ...(opts.log && { log: opts.log }) });
  const { guest, launchedAt, owned, stop } = await bootLabGuest(workDir, {
    rootfs: IMAGE,
    binds: [{ host: path.join(prepared.artifactDir, 'meshvm'), guest: '/usr/local/bin/meshvm' }],
  });
  try {
    const lab = await startLab(guest, { artifactDir: prepared.artifactDir, artifactPki: prepared.pki, ...opts.lab });
    owned.lab = lab;
    const labReadyMs = Date.now() - launchedAt;
    await guest.waitForBoot(180_000);
    await guest.writeFile('/etc/resolv.conf', `nameserver ${LAB.upstreamDns}\n`);
    await guest.writeFile('/usr/local/share/ca-certificates/meshvm-lab-artifacts.crt', prepared.pki.caPem);
    await run(guest, ['update-ca-certificates']);
    await guest.writeFile('/etc/meshvm/role-id', 'role-id-lab\n', { mode: 0o600 });
    await guest.writeFile('/etc/meshvm/secret-id', 'secret-id-lab\n', { mode: 0o600 });
    return { guest, lab, launchedAt, labReadyMs, userData: '', deb: prepared.deb, executableSha256: prepared.executableSha256, workDir, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The node file of the lab's VM (what the example user-data writes), optionally with another Vault KV path. */
export function labNodeYaml(a: { deb: { sha256: string } }, kvPath = 'meshvm/cluster-a'): string {
  return [
    'attributes:',
    `  workload: { name: ${WORKLOAD.name}, namespace: ${WORKLOAD.namespace}, serviceAccount: ${WORKLOAD.serviceAccount}, ports: [${WORKLOAD.port}] }`,
    `  package: { from: deb, url: https://127.0.0.1:${LAB.artifactPort}/istio-sidecar.deb, sha256: ${a.deb.sha256}, caFile: /etc/ssl/certs/ca-certificates.crt }`,
    '  cluster:',
    '    vault:',
    `      address: https://127.0.0.1:${LAB.vaultPort}`,
    '      caFile: /etc/ssl/certs/ca-certificates.crt',
    '      auth: { method: approle, roleIdFile: /etc/meshvm/role-id, secretIdFile: /etc/meshvm/secret-id }',
    `    access: { kv: { path: ${kvPath} } }`,
    '',
  ].join('\n');
}
