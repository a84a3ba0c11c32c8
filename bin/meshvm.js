#!/usr/bin/env node
// The meshvm command from the sources: lets recipe modules anywhere `import ... from 'meshvm'`, then runs the CLI.
// Written for any Node.js that runs ES modules, so an older one gets a clear message instead of a SyntaxError.
import nodeModule from 'node:module';

const NEEDED = 24;
if (Number(process.versions.node.split('.')[0]) < NEEDED) {
  process.stderr.write(
    `meshvm needs Node.js >= ${NEEDED} (found v${process.versions.node}); the built executable (npm run build: dist/meshvm) brings its own\n`,
  );
  process.exit(1);
}

// installed from the registry (under node_modules, where Node does not strip types): the built bundle
if (import.meta.url.includes('/node_modules/')) {
  await import('../dist/meshvm.mjs');
  process.exit();
}
// V8's compile cache, in a directory only this user can write (not Node's default under /tmp)
(await import('./compile-cache.js')).enableSafeCompileCache();
const api = new URL('../index.ts', import.meta.url).href;
nodeModule.registerHooks({
  resolve(specifier, context, nextResolve) {
    return specifier === 'meshvm' ? { url: api, shortCircuit: true } : nextResolve(specifier, context);
  },
});

const { main } = await import('../engine/cli.ts');
const { builtinRunlists } = await import('./runlists.ts');
// the built-in recipes only when a runlist names one
const builtins = () => import('../recipes/index.ts').then((m) => m.builtins);
process.exitCode = await main(process.argv.slice(2), { builtins, runlists: builtinRunlists });
