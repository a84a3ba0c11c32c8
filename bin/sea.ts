// The self-contained executable's entry (npm run build): Node.js embedded, recipe modules on disk may import 'meshvm'.
import './zod-config.ts';
import { registerHooks } from 'node:module';
import { enableSafeCompileCache } from './compile-cache.ts';
import * as api from '../index.ts';
import { run } from './entry.ts';
import { rerunWithoutRuntimeVariables } from './runtime-env.ts';

if (!rerunWithoutRuntimeVariables()) {
  // the executable's own code comes compiled (its code cache); this caches the recipe modules it loads from disk
  enableSafeCompileCache();
  // A recipe module's `import ... from 'meshvm'` is answered from this executable: a synthetic module re-exporting the API.
  (globalThis as { __meshvm?: unknown }).__meshvm = api;
  const names = Object.keys(api).filter((name) => name !== 'default');
  registerHooks({
    resolve: (specifier, context, next) => (specifier === 'meshvm' ? { url: 'meshvm:api', shortCircuit: true } : next(specifier, context)),
    load: (url, context, next) =>
      url === 'meshvm:api'
        ? { format: 'module', shortCircuit: true, source: `const api = globalThis.__meshvm;\nexport const { ${names.join(', ')} } = api;\n` }
        : next(url, context),
  });

  run(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
