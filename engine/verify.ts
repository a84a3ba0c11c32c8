// meshvm verify: each runlist entry's recipe checks what that entry declared (Recipe.checks), in runlist order.
import type { Check, CheckContext } from './check.ts';
import { errorMessage } from './errors.ts';
import type { HostReader } from './host.ts';
import type { Recipe } from './recipe.ts';
import type { Declared } from './resource.ts';

/** One runlist entry: its recipe, its validated attributes, and what it declared in this plan. */
export interface CheckEntry {
  recipe: Recipe;
  attributes: Record<string, unknown>;
  declared: readonly Declared[];
}

export interface CheckOptions {
  /** A DNS server to ask instead of the system resolver: "IP" or "IP:PORT". */
  resolver?: string | undefined;
  /** How long a network check waits (default 3000 ms). */
  timeoutMs?: number | undefined;
}

export const CHECK_TIMEOUT_MS = 3000;

/** The checks of every entry whose recipe has some; a recipe whose checks throw gets one failed line and the others still run. */
export async function runChecks(entries: readonly CheckEntry[], host: HostReader, options: CheckOptions = {}): Promise<Check[]> {
  const recipes = entries.map((entry) => entry.recipe.name);
  const checks: Check[] = [];
  for (const { recipe, attributes, declared } of entries) {
    if (!recipe.checks) continue;
    const context: CheckContext = { host, declared, recipes, resolver: options.resolver, timeoutMs: options.timeoutMs ?? CHECK_TIMEOUT_MS };
    try {
      checks.push(...(await recipe.checks(attributes, context)));
    } catch (error) {
      checks.push({
        check: recipe.name,
        ok: false,
        detail: `the checks of recipe ${recipe.name} stopped: ${errorMessage(error)}`,
        fix: "a check should fail, not throw: report this with the message (the other recipes' checks ran)",
      });
    }
  }
  return checks;
}
