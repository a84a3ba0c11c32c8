// The bundle's entry (npm run build): the public API for recipe modules, and the command when run.
import { enableCompileCache, registerHooks } from 'node:module';
import { main } from '../engine/cli.ts';
import { builtins } from '../recipes/index.ts';

export * from '../index.ts';

enableCompileCache?.();
const self = import.meta.url;
registerHooks({
  resolve(specifier, context, nextResolve) {
    return specifier === 'meshvm' ? { url: self, shortCircuit: true } : nextResolve(specifier, context);
  },
});
process.exitCode = await main(process.argv.slice(2), { builtins });
