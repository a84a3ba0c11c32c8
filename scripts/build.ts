// npm run build: one ESM bundle of meshvm (dist/meshvm.mjs) with lazily loaded chunks for heavy libraries.
import { build } from 'esbuild';
import fs from 'node:fs/promises';
import path from 'node:path';

const LAUNCHER = `#!/usr/bin/env node
// meshvm: enables the compile cache, lets recipe modules import 'meshvm', runs the command.
import { enableCompileCache, registerHooks } from 'node:module';
enableCompileCache?.();
const core = new URL('./meshvm-core.mjs', import.meta.url).href;
registerHooks({ resolve: (specifier, context, next) => (specifier === 'meshvm' ? { url: core, shortCircuit: true } : next(specifier, context)) });
const { run } = await import(core);
process.exitCode = await run(process.argv.slice(2));
`;

const root = path.resolve(import.meta.dirname, '..');
const outdir = path.join(root, 'dist');
await fs.rm(outdir, { recursive: true, force: true });
const started = performance.now();
const result = await build({
  absWorkingDir: root,
  entryPoints: { 'meshvm-core': 'bin/entry.ts' },
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
  metafile: true,
  logLevel: 'warning',
});
// the launcher: V8's compile cache must be on before the (large) core is compiled, so it is a separate small module
const main = path.join(outdir, 'meshvm.mjs');
await fs.writeFile(main, LAUNCHER, { mode: 0o755 });
const sizes = Object.entries(result.metafile.outputs).map(([file, out]) => `${path.relative(root, file)} ${(out.bytes / 1024).toFixed(0)} KiB`);
console.log(`built in ${((performance.now() - started) / 1000).toFixed(2)} s:\n  ${sizes.join('\n  ')}`);
