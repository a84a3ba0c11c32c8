// sidecar.runtime container: the engine's command lines, the unit (systemd-analyze verify), the image pinned by digest
// (no digest refused), loaded into the root's own image store only when missing (a new digest: one load, one restart), and
// the proxy container run for real by podman from Debian's packages: a tiny image of this machine's dash, loaded from an
// OCI archive (no registry is reachable here: only loopback), with a stand-in pilot-agent that reports what it was given.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { parseImageReference, storeReference } from '../../resources/container-image.ts';
import { CONTAINER_MOUNTS, containerUnitSections, LAUNCHER, runArgv, START_SCRIPT } from '../../recipes/sidecar-container.ts';
import { BIN, PROJECT, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';
import { buildOciArchive } from '../helpers/oci-image.ts';
import { LAB_WORKLOAD, AUTO_REGISTRATION_RULES, MESH_RULES, startMeshLab } from '../helpers/mesh-lab.ts';

const NAME = 'localhost/meshvm-test/proxy';
const DIGEST = `sha256:${'a'.repeat(64)}`;

const podman = await execa('podman', ['--version'], { reject: false }).then(
  (r) => r.exitCode === 0,
  () => false,
);
const withPodman = podman ? test.serial : test.skip;
if (!podman) test.skip('podman tests are skipped on this machine (podman is not installed; scripts/test-deps.ts installs it from Debian)', () => {});

// ---- pure: references and command lines

test('image references: name, tag and digest read as the distribution grammar spells them; the store is asked for name@digest', (t) => {
  t.deepEqual(parseImageReference(`docker.io/istio/proxyv2:1.24.0@${DIGEST}`), { name: 'docker.io/istio/proxyv2', tag: '1.24.0', digest: DIGEST });
  t.deepEqual(parseImageReference('registry.local:5000/mesh/proxyv2:1.24.0'), { name: 'registry.local:5000/mesh/proxyv2', tag: '1.24.0', digest: undefined });
  t.is(storeReference(parseImageReference(`docker.io/istio/proxyv2:1.24.0@${DIGEST}`)!), `docker.io/istio/proxyv2@${DIGEST}`);
  for (const bad of ['Docker.io/Istio/Proxy', 'docker.io/istio/proxyv2@sha256:abc', 'docker.io/istio/proxyv2:1.24.0;rm', 'https://docker.io/istio/proxyv2'])
    t.is(parseImageReference(bad), undefined, bad);
});

const RUN = { engine: 'podman', image: `${NAME}@${DIGEST}`, interception: true, tproxy: false, proxyUser: 'istio-proxy' } as const;
const VOLUMES = CONTAINER_MOUNTS.flatMap((m) => ['--volume', m]);

test("the engine's command lines: the proxy on the host network as istio-proxy's uid with no capability; NET_ADMIN and NET_RAW only for the rules", (t) => {
  const common = ['/usr/bin/podman', 'run', '--rm', '--replace'];
  const network = ['--network', 'host', '--uts', 'host', '--pull', 'never'];
  t.deepEqual(runArgv(RUN, 'run'), [
    ...common,
    '--name',
    'istio-proxy',
    ...network,
    '--user',
    '$uid:$gid',
    '--cap-drop',
    'ALL',
    ...VOLUMES,
    '--entrypoint',
    '/bin/sh',
    `${NAME}@${DIGEST}`,
    START_SCRIPT,
    'run',
  ]);
  t.deepEqual(runArgv(RUN, 'init'), [
    ...common,
    '--name',
    'istio-proxy-init',
    ...network,
    '--user',
    '0:0',
    '--cap-drop',
    'ALL',
    '--cap-add',
    'NET_ADMIN',
    '--cap-add',
    'NET_RAW',
    '--env',
    'PROXY_UID=$uid',
    '--env',
    'PROXY_GID=$gid',
    ...VOLUMES,
    '--entrypoint',
    '/bin/sh',
    `${NAME}@${DIGEST}`,
    START_SCRIPT,
    'init',
  ]);
  // TPROXY: istio-start.sh runs the proxy as root then, for its transparent listeners
  t.deepEqual(runArgv({ ...RUN, tproxy: true }, 'run').slice(12, 18), ['--user', '0:0', '--cap-drop', 'ALL', '--cap-add', 'NET_ADMIN']);
  const docker = runArgv({ ...RUN, engine: 'docker' }, 'run');
  t.is(docker[0], '/usr/bin/docker');
  t.false(docker.includes('--replace'), 'docker has no --replace: the unit removes the container when it stops');
});

test('the unit: the rules container before the proxy only with interception iptables; docker ordered after its daemon', (t) => {
  t.deepEqual(containerUnitSections(RUN).Service, {
    ExecStartPre: [`${LAUNCHER} init`],
    ExecStart: `${LAUNCHER} run`,
    ExecStopPost: [`-${LAUNCHER} stop`, `-${LAUNCHER} clean`],
    KillMode: 'mixed',
    Restart: 'always',
    RestartSec: 10,
    TimeoutStopSec: 30,
  });
  t.false('ExecStartPre' in containerUnitSections({ ...RUN, interception: false }).Service);
  t.like(containerUnitSections({ ...RUN, engine: 'docker' }).Unit, { Requires: 'docker.service', After: ['network-online.target', 'docker.service'] });
  t.deepEqual(containerUnitSections({ ...RUN, engine: 'docker' }).Service.ExecStartPre, [`-${LAUNCHER} stop`, `${LAUNCHER} init`]);
});

// ---- through the CLI, with the real podman on the root's own image store

/** meshvm in a throwaway mount namespace: podman keeps a blob cache in /var/lib/containers, a tmpfs there, not this machine's. */
async function meshvmIsolated(args: string[]) {
  const result = await execa(
    'unshare',
    ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs meshvm-test /var/lib && exec "$@"', 'sh', process.execPath, BIN, ...args],
    { cwd: PROJECT, env: { NO_COLOR: '1' }, reject: false, timeout: 120_000 },
  );
  return { exitCode: result.exitCode ?? 1, stdout: String(result.stdout), stderr: String(result.stderr) };
}

/** The stand-in pilot-agent of the test image: says what it was asked and what it can see, then ends. */
const PILOT_AGENT = `#!/bin/sh
while read -r key value rest; do [ "$key" = Uid: ] && uid=$value; done < /proc/self/status
echo "args: $*"
echo "uid: $uid"
echo "PROXY_UID=\${PROXY_UID:-} POD_NAMESPACE=\${POD_NAMESPACE:-} CA_ADDR=\${CA_ADDR:-} OUTPUT_CERTS=\${OUTPUT_CERTS:-}"
if read -r token < /var/run/secrets/tokens/istio-token; then echo "token: $token"; fi
if (: > /var/lib/istio/envoy/probe) 2>/dev/null; then echo 'envoy dir: writable'; else echo 'envoy dir: read-only'; fi
if (: > /etc/istio/proxy/probe) 2>/dev/null; then echo 'proxy dir: writable'; else echo 'proxy dir: read-only'; fi
`;

interface Report {
  summary: { changed: number };
  resources: { ref: string; status: string; changes: string[]; error?: string }[];
  notifications: { ref: string; status: string }[];
}

async function world(t: ExecutionContext) {
  const root = await scratchRoot(t);
  const work = await scratchRoot(t, 'meshvm-oci-');
  const image = async (tag: string, archive: string) =>
    buildOciArchive(path.join(work, tag), path.join(root, archive), `${NAME}:${tag}`, {
      '/usr/local/bin/pilot-agent': [PILOT_AGENT, 0o755],
      [`/etc/meshvm-test-${tag}`]: [`${tag}\n`, 0o644],
    });
  // the unit the istio-sidecar package would have brought is not there: runtime container writes its own istio.service
  const runlist = await writeRunlist(
    work,
    'container.yaml',
    JSON.stringify({
      name: 'container-lab',
      attributes: { flow: 'istiod' },
      recipes: [
        { recipe: 'istio-proxy-user' },
        { recipe: 'sidecar', attributes: { package: { from: 'none' }, runtime: 'container' } },
        { recipe: 'sidecar-services' },
      ],
    }),
  );
  const run = async (command: 'converge' | 'plan' | 'offboard', container: Record<string, unknown>) => {
    const result = await meshvmIsolated([
      command,
      ...(command === 'offboard' ? ['--purge'] : []),
      runlist,
      '--root',
      root,
      '--json',
      '--set',
      `sidecar.container=${JSON.stringify({ enginePackage: 'none', ...container })}`,
    ]);
    return { ...result, report: (result.stdout ? JSON.parse(result.stdout) : undefined) as Report };
  };
  return { root, image, run };
}

const changed = (r: Report) => r.resources.filter((x) => x.status === 'changed').map((x) => x.ref);

withPodman("the image by digest: loaded into the root's store once, a second converge changes nothing; a new digest is one load and one restart", async (t) => {
  const { root, image, run } = await world(t);
  const one = await image('1', '/srv/images/proxy-1.tar');
  const first = await run('converge', { image: `${NAME}:1@${one}`, archive: '/srv/images/proxy-1.tar' });
  t.is(first.exitCode, 0, first.stderr + first.stdout);
  t.deepEqual(
    changed(first.report).filter((ref) => !ref.startsWith('group[') && !ref.startsWith('user[')),
    [
      `container_image[${NAME}@${one}]`,
      'directory[/usr/local/lib/meshvm]',
      `file[${START_SCRIPT}]`,
      `file[${LAUNCHER}]`,
      'systemd_unit[/etc/systemd/system/istio.service]',
      'directory[/var/lib/istio/envoy]',
      'file[/var/lib/istio/envoy/sidecar.env]',
      'service[istio.service]',
    ],
  );
  const store = ['podman', '--root', `${root}/var/lib/containers/storage`, '--runroot', `${root}/run/containers/storage`, '--tmpdir', `${root}/run/libpod`];
  const inspect = await execa('unshare', [
    '-m',
    '--propagation',
    'private',
    'sh',
    '-c',
    'mount -t tmpfs t /var/lib && exec "$@"',
    'sh',
    ...store,
    'image',
    'inspect',
    '--format',
    '{{json .RepoDigests}}',
    `${NAME}@${one}`,
  ]);
  t.is(String(inspect.stdout), JSON.stringify([`${NAME}@${one}`]), "the image is in the root's own store, by its digest");
  const unit = await fs.readFile(path.join(root, 'etc/systemd/system/istio.service'), 'utf8');
  t.regex(unit, new RegExp(`^ExecStartPre=${LAUNCHER} init$`, 'm'));
  t.regex(await fs.readFile(path.join(root, LAUNCHER.slice(1)), 'utf8'), new RegExp(`${NAME}@${one} `));

  const again = await run('converge', { image: `${NAME}:1@${one}`, archive: '/srv/images/proxy-1.tar' });
  t.is(again.exitCode, 0, again.stderr);
  t.deepEqual(changed(again.report), [], 'nothing to do: the image is in the store (not loaded again)');

  const two = await image('2', '/srv/images/proxy-2.tar');
  t.not(two, one);
  const moved = await run('converge', { image: `${NAME}:2@${two}`, archive: '/srv/images/proxy-2.tar' });
  t.is(moved.exitCode, 0, moved.stderr);
  t.deepEqual(changed(moved.report), [`container_image[${NAME}@${two}]`, `file[${LAUNCHER}]`], 'one load, the launcher names the new digest');
  t.deepEqual(
    moved.report.notifications.map((n) => n.ref),
    ['service[istio.service]'],
    'istio restarted once for the image and the launcher together',
  );
});

withPodman(
  'an archive that holds another image than the digest names is refused in preflight, naming both: nothing changes (tree hash before and after)',
  async (t) => {
    const { root, image, run } = await world(t);
    const one = await image('1', '/srv/images/proxy-1.tar');
    const before = await snapshot(root);
    const result = await run('converge', { image: `${NAME}:1@${DIGEST}`, archive: '/srv/images/proxy-1.tar' });
    t.is(result.exitCode, 1);
    t.regex(result.stderr + result.stdout, new RegExp(`the archive /srv/images/proxy-1.tar does not hold ${NAME}@${DIGEST}: its index names ${one}`));
    t.deepEqual(changed(result.report ?? { resources: [] }), []);
    const after = await snapshot(root);
    // the run's own log of the failure is the one thing written
    delete after['var/lib/meshvm/last-run.json'];
    for (const dir of ['var/lib/meshvm/', 'var/lib/']) if (!(dir in before)) delete after[dir];
    t.deepEqual(
      Object.keys(after).filter((p) => !(p in before) || after[p] !== before[p]),
      [],
      'the tree is as it was',
    );
  },
);

test('an image without a digest is refused, naming the reference and the opt-out, before anything is written; allowUnpinned accepts it', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-lab-');
  const runlist = (container: Record<string, unknown>) =>
    writeRunlist(
      dir,
      'c.yaml',
      JSON.stringify({
        name: 'unpinned', // no cluster here: the version-skew check (tested below) is off
        attributes: { flow: 'istiod' },
        recipes: [
          {
            recipe: 'sidecar',
            attributes: {
              package: { from: 'none' },
              runtime: 'container',
              proxyUser: 'root',
              versionSkew: 'ignore',
              container: { enginePackage: 'none', ...container },
            },
          },
        ],
      }),
    );
  const refused = await meshvmIsolated(['converge', await runlist({ image: 'docker.io/istio/proxyv2:1.24.0' }), '--root', root]);
  t.is(refused.exitCode, 1);
  t.regex(
    refused.stderr + refused.stdout,
    /docker\.io\/istio\/proxyv2:1\.24\.0 is not pinned by digest: give name@sha256:<digest> \(what a tag names can change under the same name\), or set allowUnpinned: true/,
  );
  t.deepEqual(await fs.readdir(root), [], 'nothing written');
  const plan = await meshvmIsolated(['plan', await runlist({ image: 'docker.io/istio/proxyv2:1.24.0', allowUnpinned: true }), '--root', root, '--json']);
  t.regex(plan.stdout, /container_image\[docker\.io\/istio\/proxyv2:1\.24\.0\]/);
});

test('runtime container without an image, or with the classic flow, is refused naming the attribute', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-lab-');
  const file = await writeRunlist(
    dir,
    'c.yaml',
    JSON.stringify({ name: 'x', attributes: { flow: 'istiod' }, recipes: [{ recipe: 'sidecar', attributes: { runtime: 'container' } }] }),
  );
  const result = await meshvmIsolated(['plan', file, '--root', root]);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /container: runtime container needs container\.image/);
  const classic = await writeRunlist(
    dir,
    'classic.yaml',
    JSON.stringify({
      name: 'x',
      attributes: { flow: 'classic' },
      recipes: [{ recipe: 'sidecar', attributes: { runtime: 'container', inboundPorts: [80], container: { image: `${NAME}@${DIGEST}` } } }],
    }),
  );
  const refused = await meshvmIsolated(['plan', classic, '--root', root]);
  t.is(refused.exitCode, 1);
  t.regex(refused.stderr, /runtime: runtime container runs the istiod-flow proxy image/);
});

withPodman(
  'systemd-analyze verify passes the unit and the launcher meshvm wrote; the proxy container runs for real as istio-proxy with its inputs read-only',
  async (t) => {
    const { root, image, run } = await world(t);
    const digest = await image('1', '/srv/images/proxy-1.tar');
    const converged = await run('converge', { image: `${NAME}:1@${digest}`, archive: '/srv/images/proxy-1.tar' });
    t.is(converged.exitCode, 0, converged.stderr);
    // verified in the root, where the launcher is, against this machine's systemd units (copied in: the root has none)
    await fs.cp('/usr/lib/systemd/system', path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
    const verify = await execa('systemd-analyze', ['verify', '--man=no', `--root=${root}`, '/etc/systemd/system/istio.service'], { reject: false });
    t.is(verify.exitCode, 0, String(verify.stderr));
    // and it can fail: a launcher that is not there is named
    await fs.rename(path.join(root, LAUNCHER.slice(1)), path.join(root, `${LAUNCHER.slice(1)}.away`));
    const missing = await execa('systemd-analyze', ['verify', '--man=no', `--root=${root}`, '/etc/systemd/system/istio.service'], { reject: false });
    t.not(missing.exitCode, 0);
    t.regex(String(missing.stderr), /Command \/usr\/local\/lib\/meshvm\/istio-container is not executable/);
    await fs.rename(path.join(root, `${LAUNCHER.slice(1)}.away`), path.join(root, LAUNCHER.slice(1)));

    // what the other recipes write (cluster-env, certs), as this VM would have them
    await fs.writeFile(path.join(root, 'var/lib/istio/envoy/cluster.env'), "ISTIO_NAMESPACE='vm-ns'\nISTIO_SVC_IP='10.0.0.5'\n");
    for (const dir of ['etc/istio/config', 'etc/istio/proxy', 'etc/certs', 'run/secrets/tokens']) await fs.mkdir(path.join(root, dir), { recursive: true });
    await fs.writeFile(path.join(root, 'etc/certs/root-cert.pem'), 'root\n');
    // /var/run is /run on Debian: the root's /run is bound over this machine's below
    await fs.writeFile(path.join(root, 'run/secrets/tokens/istio-token'), 'a-token\n');
    const uid = /^istio-proxy:x:(\d+):(\d+):/m.exec(await fs.readFile(path.join(root, 'etc/passwd'), 'utf8'));
    t.truthy(uid, 'istio-proxy is in the root');
    await execa('chown', ['-R', `${uid![1]}:${uid![2]}`, path.join(root, 'etc/istio/proxy')]);
    // the engine's own configuration for this sandbox (a hybrid cgroup tree, lower ulimits): the unit's command line is untouched
    await fs.mkdir(path.join(root, 'etc/containers'), { recursive: true });
    await fs.cp('/etc/containers', path.join(root, 'etc/containers'), { recursive: true });
    await fs.writeFile(
      path.join(root, 'etc/containers/containers.conf'),
      '[containers]\ncgroups = "disabled"\ndefault_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]\n[engine]\nevents_logger = "none"\ncgroup_manager = "cgroupfs"\n',
    );
    for (const file of ['hosts', 'resolv.conf', 'nsswitch.conf']) await fs.copyFile(`/etc/${file}`, path.join(root, 'etc', file)).catch(() => undefined);

    // the root becomes the machine, in a throwaway mount namespace: its /etc, /var/lib, /run and /usr/local/lib bound over ours
    const asMachine = (part: string) =>
      execa(
        'unshare',
        [
          '-m',
          '--propagation',
          'private',
          'sh',
          '-c',
          [
            'set -e',
            'umount /sys/fs/cgroup/unified 2>/dev/null || true',
            `mkdir -p ${root}/run ${root}/var/lib/containers`,
            `for d in etc var/lib run usr/local/lib; do mount --bind ${root}/$d /$d; done`,
            `exec ${LAUNCHER} ${part}`,
          ].join('\n'),
        ],
        { reject: false, timeout: 120_000 },
      );
    const proxy = await asMachine('run');
    t.is(proxy.exitCode, 0, String(proxy.stderr));
    t.deepEqual(String(proxy.stdout).split('\n'), [
      'args: proxy --serviceCluster=rawvm',
      `uid: ${uid![1]}`,
      'PROXY_UID= POD_NAMESPACE=vm-ns CA_ADDR=istiod.istio-system.svc:15012 OUTPUT_CERTS=/etc/certs',
      'token: a-token',
      'envoy dir: read-only',
      'proxy dir: writable',
    ]);
    // the rules container: root, but with NET_ADMIN and NET_RAW only (not even the right to write istio-proxy's directory)
    const rules = await asMachine('init');
    t.is(rules.exitCode, 0, String(rules.stderr));
    t.deepEqual(String(rules.stdout).split('\n'), [
      'args: istio-clean-iptables',
      'uid: 0',
      `PROXY_UID=${uid![1]} POD_NAMESPACE= CA_ADDR= OUTPUT_CERTS=`,
      'token: a-token',
      'envoy dir: read-only',
      'proxy dir: read-only',
      'args: istio-iptables',
      'uid: 0',
      `PROXY_UID=${uid![1]} POD_NAMESPACE= CA_ADDR= OUTPUT_CERTS=`,
      'token: a-token',
      'envoy dir: read-only',
      'proxy dir: read-only',
    ]);
    const cleaned = await asMachine('clean');
    t.is(cleaned.exitCode, 0, String(cleaned.stderr));
    t.is(String(cleaned.stdout).split('\n')[0], 'args: istio-clean-iptables', 'the rules removed when istio stops (ExecStopPost), and nothing installed');
    t.is(
      String(cleaned.stdout)
        .split('\n')
        .filter((line) => line.startsWith('args:')).length,
      1,
    );
  },
);

withPodman(
  'the shipped runlist istio-vm-container under a scratch root: converges against the stand-ins, then a second converge changes nothing',
  async (t) => {
    const root = await scratchRoot(t);
    const work = await scratchRoot(t, 'meshvm-oci-');
    const digest = await buildOciArchive(work, path.join(root, 'srv/images/proxy.tar'), `${NAME}:1`, { '/usr/local/bin/pilot-agent': [PILOT_AGENT, 0o755] });
    const lab = await startMeshLab(t, root, { rules: [...MESH_RULES, ...AUTO_REGISTRATION_RULES] });
    const node = await writeRunlist(
      lab.dir,
      'node.yaml',
      JSON.stringify({
        attributes: {
          workload: LAB_WORKLOAD,
          container: { image: `${NAME}:1@${digest}`, archive: '/srv/images/proxy.tar', enginePackage: 'none' },
          cluster: lab.cluster,
        },
      }),
    );
    const converge = () => meshvmIsolated(['converge', 'runlists/istio-vm-container.yaml', '--root', root, '--node', node, '--json']);
    const first = await converge();
    t.is(first.exitCode, 0, first.stderr + first.stdout);
    t.true(changed(JSON.parse(first.stdout) as Report).includes(`container_image[${NAME}@${digest}]`));
    const second = await converge();
    t.is(second.exitCode, 0, second.stderr);
    const report = JSON.parse(second.stdout) as Report;
    t.deepEqual(changed(report), []);
  },
);

withPodman(
  "offboard --purge (runtime container): istio stopped and disabled, the unit, the launcher and the start script removed, the image gone from the root's store; a second offboard changes nothing",
  async (t) => {
    const { root, image, run } = await world(t);
    const digest = await image('1', '/srv/images/proxy-1.tar');
    const container = { image: `${NAME}:1@${digest}`, archive: '/srv/images/proxy-1.tar' };
    t.is((await run('converge', container)).exitCode, 0);
    const off = await run('offboard', container);
    t.is(off.exitCode, 0, off.stderr + off.stdout);
    const removed = changed(off.report);
    for (const ref of [
      'systemd_unit[/etc/systemd/system/istio.service]',
      `file[${LAUNCHER}]`,
      `file[${START_SCRIPT}]`,
      'directory[/usr/local/lib/meshvm]',
      `container_image[${NAME}@${digest}]`,
    ])
      t.true(removed.includes(ref), `${ref} undone (changed: ${removed.join(', ')})`);
    for (const file of ['etc/systemd/system/istio.service', LAUNCHER.slice(1), START_SCRIPT.slice(1)])
      await t.throwsAsync(fs.access(path.join(root, file)), undefined, `${file} removed`);
    const store = ['podman', '--root', `${root}/var/lib/containers/storage`, '--runroot', `${root}/run/containers/storage`, '--tmpdir', `${root}/run/libpod`];
    const inspect = await execa(
      'unshare',
      ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs t /var/lib && exec "$@"', 'sh', ...store, 'image', 'exists', `${NAME}@${digest}`],
      { reject: false },
    );
    t.is(inspect.exitCode, 1, 'the image is no longer in the store');
    const again = await run('offboard', container);
    t.is(again.exitCode, 0, again.stderr);
    t.deepEqual(changed(again.report), []);
  },
);

test("version skew (runtime container): a new image whose tag is newer than istiod is refused in plan, naming the tag and istiod's version; istiod's own minor is accepted", async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root, {
    rules: [...MESH_RULES, { verbs: ['get'], apiGroups: ['apps'], resources: ['deployments'], resourceNames: ['istiod'], namespaces: ['istio-system'] }],
  });
  lab.kube.objects.installIstio({ version: '1.24.2' });
  const plan = async (tag: string) => {
    const file = await writeRunlist(
      lab.dir,
      `skew-${tag}.yaml`,
      JSON.stringify({
        name: 'skew',
        attributes: { flow: 'istiod', cluster: lab.cluster },
        recipes: [
          {
            recipe: 'sidecar',
            attributes: { runtime: 'container', proxyUser: 'root', container: { image: `docker.io/istio/proxyv2:${tag}@${DIGEST}`, enginePackage: 'none' } },
          },
        ],
      }),
    );
    return meshvmIsolated(['plan', file, '--root', root]);
  };
  const newer = await plan('1.25.0');
  t.is(newer.exitCode, 1);
  t.regex(
    newer.stderr,
    new RegExp(
      `the sidecar 1\\.25\\.0 is newer than istiod 1\\.24\\.2: .*\\(sidecar from the image tag of docker\\.io/istio/proxyv2:1\\.25\\.0@${DIGEST}, istiod in istio-system\\)`,
    ),
  );
  const same = await plan('1.24.0');
  t.is(same.exitCode, 0, same.stderr);
});
