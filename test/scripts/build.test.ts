// npm run build, run for real into a scratch directory (--outdir, so dist/ stays as other tests use it): it prints no
// ELF-note warnings from postject, the self-contained executable it makes runs and has well-formed notes, and Node's
// runtime variables (NODE_OPTIONS, OPENSSL_CONF, NODE_*) given to it change nothing: none runs code or loads a file.
import test from 'ava';
import { execa } from 'execa';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PROJECT, scratchRoot } from '../helpers/scratch.ts';

/** One build for the file's tests (it takes tens of seconds), in a directory removed after them all. */
let built: Promise<{ out: string; build: Awaited<ReturnType<typeof execa>> }> | undefined;
const buildOnce = () =>
  (built ??= fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-build-')).then(async (out) => ({
    out,
    build: await execa(process.execPath, [path.join(PROJECT, 'scripts/build.ts'), '--outdir', out], { reject: false, cwd: PROJECT }),
  })));
test.after.always(async () => {
  if (built) await fs.rm((await built).out, { recursive: true, force: true });
});

test.serial('the build prints no "Can\'t find string offset" warnings and its executable runs', async (t) => {
  const { out, build } = await buildOnce();
  t.is(build.exitCode, 0, String(build.stderr));
  t.notRegex(`${build.stdout}\n${build.stderr}`, /Can't find string offset/);
  t.regex(String(build.stdout), /built in [\d.]+ s/);
  const version = await execa(path.join(out, 'meshvm'), ['--version'], { reject: false });
  t.is(version.exitCode, 0, version.stderr);
  t.regex(version.stdout.trim(), /^\d+\.\d+\.\d+/, 'meshvm answers, not the node it was made from');
  // --version alone is answered by the launchers themselves: the package's version, and nothing loaded (no compile cache)
  const { version: packaged } = JSON.parse(await fs.readFile(path.join(PROJECT, 'package.json'), 'utf8')) as { version: string };
  const cache = path.join(await scratchRoot(t, 'meshvm-version-'), 'cache');
  for (const argv of [[path.join(out, 'meshvm')], [process.execPath, path.join(out, 'meshvm.mjs')]]) {
    for (const flag of ['--version', '-V']) {
      const answer = await execa(argv[0]!, [...argv.slice(1), flag], { reject: false, env: { MESHVM_COMPILE_CACHE: cache } });
      t.is(answer.stdout, packaged, `${argv.at(-1)} ${flag}`);
      t.is(answer.exitCode, 0);
    }
  }
  t.false(
    await fs.stat(cache).then(
      () => true,
      () => false,
    ),
    'nothing was loaded that would compile',
  );
  const readelf = await execa('readelf', ['-n', '-W', path.join(out, 'meshvm')], { reject: false, stdout: 'ignore' });
  // readelf comes with binutils, which the build needs for objcopy: a missing or failing readelf is a failure, not a pass
  t.is(readelf.exitCode, 0, readelf.stderr);
  t.notRegex(readelf.stderr, /[Cc]orrupt note|invalid namesz/, 'readelf finds no malformed notes');
});

test.serial('the executable ignores NODE_OPTIONS (a --require canary never runs), OPENSSL_CONF and the other NODE_* variables', async (t) => {
  const { out, build } = await buildOnce();
  t.is(build.exitCode, 0, String(build.stderr));
  const dir = await scratchRoot(t, 'meshvm-canary-');
  const ran = path.join(dir, 'ran');
  const canary = path.join(dir, 'x.cjs');
  await fs.writeFile(canary, `require('node:fs').appendFileSync(${JSON.stringify(ran)}, 'NODE_OPTIONS --require ran\\n');\n`);
  // an OpenSSL configuration that loads a provider module: a shared object from anywhere would be code (this one is missing,
  // so a Node that reads the file aborts at start-up instead of running it)
  const openssl = path.join(dir, 'openssl.cnf');
  await fs.writeFile(openssl, `nodejs_conf = init\n[init]\nproviders = p\n[p]\ncanary = c\n[c]\nmodule = ${dir}/canary.so\nactivate = 1\n`);
  const warnings = path.join(dir, 'warnings');
  const env = {
    NODE_OPTIONS: `--require ${canary}`,
    OPENSSL_CONF: openssl,
    NODE_REDIRECT_WARNINGS: warnings,
    NODE_DEBUG: 'module,http,tls',
    NODE_PATH: dir,
    NODE_V8_COVERAGE: path.join(dir, 'coverage'),
  };
  const version = await execa(path.join(out, 'meshvm'), ['--version'], { reject: false, env });
  t.is(version.exitCode, 0, version.stderr);
  t.regex(version.stdout.trim(), /^\d+\.\d+\.\d+$/);
  t.notRegex(version.stderr, /^(MODULE|HTTP|TLS|NET) \d+:|[Ww]arning/m, 'no debug output, no warning');
  t.deepEqual((await fs.readdir(dir)).sort(), ['openssl.cnf', 'x.cjs'], 'nothing ran, nothing was written (no coverage, no warnings file)');
  // the exit status comes through the re-run
  const bad = await execa(path.join(out, 'meshvm'), ['converge', path.join(dir, 'missing.yaml')], { reject: false, env });
  t.is(bad.exitCode, 1);
  t.regex(bad.stderr, /missing\.yaml/);
  // the re-run is the same process (execve): a command it runs has the pid the caller started as its parent
  const work = await scratchRoot(t, 'meshvm-rerun-');
  await fs.writeFile(
    path.join(work, 'site.ts'),
    `import { defineRecipe, Execute, z } from 'meshvm';\nexport default defineRecipe({ name: 'site', attributes: z.strictObject({}), declare: () => [` +
      `Execute({ onHost: true, name: 'ppid', command: ['sh', '-c', 'echo "$PPID" > ${work}/ppid; env > ${work}/env'], creates: '/ppid' })] });\n`,
  );
  await fs.writeFile(path.join(work, 'runlist.yaml'), 'name: rerun\nrecipes:\n  - recipe: ./site.ts\n');
  const started = execa(path.join(out, 'meshvm'), ['converge', path.join(work, 'runlist.yaml'), '--root', work], { reject: false, env });
  const converged = await started;
  t.is(converged.exitCode, 0, converged.stderr);
  t.is((await fs.readFile(path.join(work, 'ppid'), 'utf8')).trim(), String(started.pid));
  t.notRegex(await fs.readFile(path.join(work, 'env'), 'utf8'), /^NODE_/m);
  // the same canary against plain node shows what it guards against
  const node = await execa(process.execPath, ['-e', '0'], { reject: false, env: { NODE_OPTIONS: `--require ${canary}` } });
  t.is(node.exitCode, 0);
  t.is(await fs.readFile(ran, 'utf8'), 'NODE_OPTIONS --require ran\n', 'the canary works: plain node runs it');
});

test.serial('NODE_EXTRA_CA_CERTS naming a root-owned file is kept, with no second start; one others could write is cleared by the re-run', async (t) => {
  const { out, build } = await buildOnce();
  t.is(build.exitCode, 0, String(build.stderr));
  const dir = await scratchRoot(t, 'meshvm-ca-');
  await fs.chmod(dir, 0o700);
  const ca = path.join(dir, 'ca.pem');
  await fs.copyFile(path.join(PROJECT, 'examples/demo-certs/root-cert.pem'), ca);
  await fs.chmod(ca, 0o644);
  await fs.writeFile(
    path.join(dir, 'site.ts'),
    `import { defineRecipe, Execute, z } from 'meshvm';\nexport default defineRecipe({ name: 'site', attributes: z.strictObject({}), declare: () => [` +
      `Execute({ onHost: true, name: 'environ', command: ['sh', '-c', 'tr "\\\\0" "\\\\n" < /proc/$PPID/environ > ${dir}/environ'], onlyIf: ['true'] })] });\n`,
  );
  await fs.writeFile(path.join(dir, 'runlist.yaml'), 'name: ca\nrecipes:\n  - recipe: ./site.ts\n');
  /** The environment of the meshvm process that ran the recipe: after a re-run (execve), the re-run's. */
  const environ = async () => {
    const run = await execa(path.join(out, 'meshvm'), ['converge', path.join(dir, 'runlist.yaml'), '--root', dir], {
      reject: false,
      extendEnv: false,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_EXTRA_CA_CERTS: ca, MESHVM_COMPILE_CACHE: process.env.MESHVM_COMPILE_CACHE },
    });
    t.is(run.exitCode, 0, run.stderr);
    t.notRegex(run.stderr, /[Ww]arning/, 'Node loaded the extra CA file without complaint');
    return (await fs.readFile(path.join(dir, 'environ'), 'utf8')).split('\n');
  };
  const kept = await environ();
  t.true(kept.includes(`NODE_EXTRA_CA_CERTS=${ca}`), 'kept');
  t.false(kept.includes('MESHVM_RUNTIME_CLEARED=1'), 'no re-run');
  await fs.chmod(ca, 0o666);
  const cleared = await environ();
  t.false(
    cleared.some((line) => line.startsWith('NODE_EXTRA_CA_CERTS=')),
    'cleared',
  );
  t.true(cleared.includes('MESHVM_RUNTIME_CLEARED=1'), 'by the re-run');
});

test('the build refuses --outdir without a directory', async (t) => {
  const build = await execa(process.execPath, [path.join(PROJECT, 'scripts/build.ts'), '--outdir'], { reject: false, cwd: PROJECT });
  t.not(build.exitCode, 0);
  t.regex(build.stderr, /--outdir needs a directory/);
});

test.serial('the built bundle and executable reach AWS credentials through the SDK chain (environment) and log in to Vault with them', async (t) => {
  // Vault stand-in (API v1, auth/aws/login checking the SigV4-signed GetCallerIdentity) for the site's Vault: the login
  // succeeds only if the SDK's default chain, loaded as the build loads it, gave the environment's keys
  const { startVault } = await import('../stand-ins/index.ts');
  const AWS = { AWS_ACCESS_KEY_ID: 'AKIDBUILDTEST', AWS_SECRET_ACCESS_KEY: 'build-test-aws-secret' };
  const vault = await startVault({
    policies: { mesh: [{ path: 'secret/data/meshvm/*', capabilities: ['read'] }] },
    aws: {
      roles: { vm: { policies: ['mesh'] } },
      identities: { [AWS.AWS_ACCESS_KEY_ID]: { arn: 'arn:aws:sts::123456789012:assumed-role/vm-role/i-0abc', secretAccessKey: AWS.AWS_SECRET_ACCESS_KEY } },
    },
  });
  t.teardown(() => vault.stop());
  const { out, build } = await buildOnce();
  t.is(build.exitCode, 0, String(build.stderr));
  const dir = await scratchRoot(t, 'meshvm-aws-chain-');
  await fs.writeFile(
    path.join(dir, 'runlist.yaml'),
    JSON.stringify({
      name: 'aws-chain',
      attributes: {
        flow: 'classic',
        cluster: { vault: { address: vault.url, insecure: true, auth: { method: 'aws', role: 'vm' } }, access: { kv: { path: 'meshvm/none' } } },
      },
      recipes: [{ recipe: 'cluster-env' }],
    }),
  );
  for (const argv of [[path.join(out, 'meshvm')], [process.execPath, path.join(out, 'meshvm.mjs')]]) {
    const before = vault.calls.length;
    const run = await execa(argv[0]!, [...argv.slice(1), 'converge', path.join(dir, 'runlist.yaml'), '--root', dir], { reject: false, env: AWS });
    const logins = vault.calls.slice(before).filter((c) => c.path === '/v1/auth/aws/login');
    t.deepEqual(
      logins.map((c) => c.status),
      [200],
      `${argv.at(-1)}: one successful aws login; stderr: ${run.stderr}`,
    );
    // the KV path holds nothing: the run stops there, after the login, and says so
    t.is(run.exitCode, 1);
    t.regex(run.stderr, /meshvm\/none/);
    t.notRegex(run.stderr, /is not a function|build-test-aws-secret/);
  }
});
