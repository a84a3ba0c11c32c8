// Planning: recipes of a runlist flattened into one ordered list of resources, each ref once.
import { isDeepStrictEqual } from 'node:util';
import type { Declared, Provision, Requirement } from './resource.ts';
import type { Recipe, RecipeContext } from './recipe.ts';
import { flatten } from './recipe.ts';
import type { Runlist } from './runlist.ts';
import type { HostReader } from './host.ts';
import { InputError, errorMessage } from './errors.ts';

/** What planning a runlist gives: the ordered resources, and what each runlist entry declared (for its checks). */
export interface Plan {
  declared: Declared[];
  entries: { recipe: Recipe; attributes: Record<string, unknown>; declared: Declared[] }[];
}

/** Calls every recipe in runlist order; the same ref twice runs once when the specs are equal, and is an error when not. */
export async function planRunlist(runlist: Runlist, context: Omit<RecipeContext, 'runlist'>): Promise<Plan> {
  const entries: Plan['entries'] = [];
  const byRef = new Map<string, Declared>();
  const entryOf = new Map<string, string>();
  const ordered: Declared[] = [];
  const ctx: RecipeContext = {
    ...context,
    runlist: { name: runlist.name, file: runlist.file, dir: runlist.dir, recipes: runlist.entries.map((e) => e.recipe.name) },
  };
  for (const entry of runlist.entries) {
    let declared: Declared[];
    try {
      declared = flatten(await entry.recipe.declare(entry.attributes, ctx));
    } catch (error) {
      if (error instanceof InputError) throw error;
      throw new InputError(`${entry.where} (recipe ${entry.recipe.name})`, errorMessage(error));
    }
    entries.push({ recipe: entry.recipe, attributes: entry.attributes as Record<string, unknown>, declared });
    for (const item of declared) {
      const seen = byRef.get(item.ref);
      if (!seen) {
        byRef.set(item.ref, item);
        entryOf.set(item.ref, entry.where);
        ordered.push(item);
      } else if (!isDeepStrictEqual(seen.spec, item.spec) || !sameTargets(seen, item)) {
        const first = `${seen.declaredAt ?? 'an unknown line'} (${entryOf.get(item.ref)})`;
        const second = `${item.declaredAt ?? 'an unknown line'} (${entry.where})`;
        throw new InputError(item.ref, `declared twice with different specs: at ${first} and at ${second}; declare it once, or make both declarations equal`);
      }
    }
  }
  for (const item of ordered) {
    for (const target of item.notifies) {
      if (!byRef.has(target.ref)) throw new InputError(item.ref, `notifies ${target.ref}, which this runlist does not declare`);
    }
  }
  return { declared: ordered, entries };
}

function sameTargets(a: Declared, b: Declared): boolean {
  return isDeepStrictEqual(a.notifies.map((n) => n.ref).sort(), b.notifies.map((n) => n.ref).sort());
}

/**
 * What each resource requires (Puppet's autorequire, declared by its type): an account must exist in the root's
 * /etc/passwd or /etc/group, or be provided by a resource declared earlier; a path provided by a resource must be
 * declared before the resources that need it. Caught before anything is written, not half-way through.
 */
export async function checkRequirements(declared: readonly Declared[], host: HostReader): Promise<void> {
  const { users, groups } = await host.accounts();
  const providedAt = new Map<string, number>();
  const id = (r: Requirement | Provision) => ('path' in r ? `path:${r.path}` : 'live' in r ? 'live' : `${r.account}:${r.name}`);
  for (const [index, item] of declared.entries()) {
    for (const provision of item.type.provides?.(item.spec) ?? []) if (!providedAt.has(id(provision))) providedAt.set(id(provision), index);
  }
  for (const [index, item] of declared.entries()) {
    const where = `${item.ref}${item.declaredAt ? ` (declared at ${item.declaredAt})` : ''}`;
    for (const need of item.type.requires?.(item.spec) ?? []) {
      if ('live' in need) {
        if (!host.live) throw new InputError(where, `needs the running system (${need.live}), and --root ${host.root} is an offline root; nothing was changed`);
        continue;
      }
      const at = providedAt.get(id(need));
      if (at === index) continue;
      if ('path' in need) {
        if (at !== undefined && at > index)
          throw new InputError(where, `needs ${need.path}, which ${declared[at]!.ref} creates, but after this resource; declare ${declared[at]!.ref} first`);
        continue;
      }
      const field = need.account === 'user' ? 'owner' : 'group';
      if (/^\d+$/.test(need.name) || (need.account === 'user' ? users : groups).has(need.name)) continue;
      const file = need.account === 'user' ? '/etc/passwd' : '/etc/group';
      if (at === undefined) {
        throw new InputError(
          where,
          `${field} "${need.name}" does not exist: it is not in ${host.live ? '' : host.root}${file} and no ${need.account === 'user' ? 'User' : 'Group'} in this runlist declares it`,
        );
      }
      if (at > index)
        throw new InputError(where, `${field} "${need.name}" is declared by ${declared[at]!.ref}, but after this resource; declare the account first`);
    }
  }
}
