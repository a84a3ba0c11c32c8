// The bundle's core (npm run build): the public API for recipe modules, and run() for the launcher.
import { main } from '../engine/cli.ts';
import { builtins } from '../recipes/index.ts';
import { builtinRunlists } from './runlists.ts';

export * from '../index.ts';

export function run(argv: readonly string[]): Promise<number> {
  return main(argv, { builtins, runlists: builtinRunlists });
}
