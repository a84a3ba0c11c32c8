// npm run build: one ESM bundle of meshvm (dist/meshvm.mjs) with lazily loaded chunks for heavy libraries.
import { build } from 'esbuild';
import fs from 'node:fs/promises';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const outdir = path.join(root, 'dist');
await fs.rm(outdir, { recursive: true, force: true });
const started = performance.now();
const result = await build({
  absWorkingDir: root,
  entryPoints: { meshvm: 'bin/entry.ts' },
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
const main = path.join(outdir, 'meshvm.mjs');
await fs.writeFile(main, '#!/usr/bin/env node\n' + (await fs.readFile(main, 'utf8')));
await fs.chmod(main, 0o755);
const sizes = Object.entries(result.metafile.outputs).map(([file, out]) => `${path.relative(root, file)} ${(out.bytes / 1024).toFixed(0)} KiB`);
console.log(`built in ${((performance.now() - started) / 1000).toFixed(2)} s:\n  ${sizes.join('\n  ')}`);
