// The bundle's core (npm run build): the public API for recipe modules, and run() for the launcher.
import { main } from '../engine/cli.ts';
import { builtinRunlists } from './runlists.ts';

export * from '../index.ts';

export function run(argv: readonly string[]): Promise<number> {
  // the built-in recipes only when a runlist names one: a chunk of their own, with the clients they use
  return main(argv, { builtins: () => import('../recipes/index.ts').then((m) => m.builtins), runlists: builtinRunlists });
}
