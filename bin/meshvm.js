#!/usr/bin/env node
// The meshvm command from the sources: lets recipe modules anywhere `import ... from 'meshvm'`, then runs the CLI.
import { enableCompileCache, registerHooks } from 'node:module';

// installed from the registry (under node_modules, where Node does not strip types): the built bundle
if (import.meta.url.includes('/node_modules/')) {
  await import('../dist/meshvm.mjs');
  process.exit();
}
enableCompileCache?.();
const api = new URL('../index.ts', import.meta.url).href;
registerHooks({
  resolve(specifier, context, nextResolve) {
    return specifier === 'meshvm' ? { url: api, shortCircuit: true } : nextResolve(specifier, context);
  },
});

const { main } = await import('../engine/cli.ts');
const { builtins } = await import('../recipes/index.ts');
const { builtinRunlists } = await import('./runlists.ts');
process.exitCode = await main(process.argv.slice(2), { builtins, runlists: builtinRunlists });
