// The self-contained executable's entry (npm run build): Node.js embedded, the bundle's ES modules (dist/meshvm-core.mjs
// and its chunks) carried inside it as assets and loaded from there as the bundle loads them from disk: only what a run
// needs is compiled and evaluated, and recipe modules on disk import 'meshvm' from the same core.
import { registerHooks } from 'node:module';
import { getAsset } from 'node:sea';
import { pathToFileURL } from 'node:url';
import { enableSafeCompileCache } from './compile-cache.js';
import { rerunWithoutRuntimeVariables } from './runtime-env.ts';

declare const __MESHVM_VERSION__: string;

const argv = process.argv.slice(2);
if (rerunWithoutRuntimeVariables()) {
  // replaced by the re-run (or refused): nothing else to do
} else if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
  // the version alone: answered here, with nothing else loaded (as engine/cli.ts would answer it)
  process.stdout.on('error', () => {});
  process.stdout.write(`${__MESHVM_VERSION__}\n`);
} else {
  // compiled code of the bundle's modules and of recipe modules, kept where only root can write (bin/compile-cache.js)
  enableSafeCompileCache();
  // the bundle's modules get file: URLs in a directory beside the executable that does not exist: no file there is ever
  // read, and stack traces and import.meta.url look as they do for the bundle on disk
  const base = pathToFileURL(`${process.execPath}.bundle/`).href;
  const core = `${base}meshvm-core.mjs`;
  registerHooks({
    resolve: (specifier, context, next) => {
      if (specifier === 'meshvm') return { url: core, shortCircuit: true };
      if (specifier.startsWith(base)) return { url: specifier, shortCircuit: true };
      if (context.parentURL?.startsWith(base) && /^\.\.?\//.test(specifier)) {
        const url = new URL(specifier, context.parentURL).href;
        if (url.startsWith(base)) return { url, shortCircuit: true };
      }
      return next(specifier, context);
    },
    load: (url, context, next) =>
      url.startsWith(base) ? { format: 'module', shortCircuit: true, source: getAsset(url.slice(base.length), 'utf8') } : next(url, context),
  });
  // zod's configuration first, before any schema exists (bin/zod-config.ts), then the core
  import(`${base}zod-config.mjs`)
    .then(() => import(core) as Promise<{ run: (argv: readonly string[]) => Promise<number> }>)
    .then(({ run }) => run(argv))
    .then((code) => {
      process.exitCode = code;
    });
}
