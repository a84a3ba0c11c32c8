// Offboarding: each recipe's undo, last recipe first, planned and run by the same planner and runner as a converge.
import type { Recipe } from './recipe.ts';
import type { Runlist } from './runlist.ts';

export interface OffboardOptions {
  /** --purge: the recipes also remove what a later join would reuse (the package, the account). */
  purge: boolean;
  /** What a recipe's undo found and leaves alone. */
  note(text: string): void;
}

/**
 * The runlist undone: its entries in reverse order, each declaring its recipe's undo (nothing, for a recipe without one),
 * with the same attributes the converge resolved. What plan, the requirement checks and the runner do with it is what
 * they do with any runlist: one ordered list of declarations, each ref once.
 */
export function offboardRunlist(runlist: Runlist, options: OffboardOptions): Runlist {
  const entries = [...runlist.entries].reverse().map((entry) => ({ ...entry, recipe: undoing(entry.recipe, options) }));
  return { ...runlist, entries };
}

/** The recipe whose declare is its undo; it has no checks of its own (verify checks a joined machine). */
function undoing(recipe: Recipe, options: OffboardOptions): Recipe {
  const { checks: _checks, ...rest } = recipe;
  return { ...rest, declare: async (attributes, context) => (recipe.undo ? recipe.undo(attributes, { ...context, ...options }) : []) };
}
