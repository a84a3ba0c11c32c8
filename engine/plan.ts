// Planning: recipes of a runlist flattened into one ordered list of resources, each ref once.
import { isDeepStrictEqual } from 'node:util';
import type { Declared } from './resource.ts';
import type { RecipeContext } from './recipe.ts';
import { flatten } from './recipe.ts';
import type { Runlist } from './runlist.ts';
import type { HostReader } from './host.ts';
import { InputError, errorMessage } from './errors.ts';

/** Calls every recipe in runlist order; the same ref twice runs once when the specs are equal, and is an error when not. */
export async function planRunlist(runlist: Runlist, context: Omit<RecipeContext, 'runlist'>): Promise<Declared[]> {
  const byRef = new Map<string, Declared>();
  const entryOf = new Map<string, string>();
  const ordered: Declared[] = [];
  const ctx: RecipeContext = { ...context, runlist: { name: runlist.name, file: runlist.file, dir: runlist.dir, recipes: runlist.entries.map((e) => e.recipe.name) } };
  for (const entry of runlist.entries) {
    let declared: Declared[];
    try {
      declared = flatten(await entry.recipe.declare(entry.attributes, ctx));
    } catch (error) {
      if (error instanceof InputError) throw error;
      throw new InputError(`${entry.where} (recipe ${entry.recipe.name})`, errorMessage(error));
    }
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
  return ordered;
}

function sameTargets(a: Declared, b: Declared): boolean {
  return isDeepStrictEqual(a.notifies.map((n) => n.ref).sort(), b.notifies.map((n) => n.ref).sort());
}

/**
 * Owners and groups named by any resource must exist in the root's /etc/passwd and /etc/group, or be declared by a
 * User or Group earlier in the run: caught before anything is written, not half-way through.
 */
export async function checkAccounts(declared: readonly Declared[], host: HostReader): Promise<void> {
  const { users, groups } = await host.accounts();
  const declaredUsers = new Map<string, number>();
  const declaredGroups = new Map<string, number>();
  for (const [index, item] of declared.entries()) {
    const name = (item.spec as { name?: string }).name;
    if (item.type.kind === 'user' && name) {
      declaredUsers.set(name, index);
      declaredGroups.set((item.spec as { group?: string }).group ?? name, index);
    }
    if (item.type.kind === 'group' && name) declaredGroups.set(name, index);
  }
  for (const [index, item] of declared.entries()) {
    const spec = item.spec as { owner?: unknown; group?: unknown };
    if (item.type.kind === 'user' || item.type.kind === 'group') continue;
    for (const [field, known, planned, file] of [
      ['owner', users, declaredUsers, '/etc/passwd'],
      ['group', groups, declaredGroups, '/etc/group'],
    ] as const) {
      const name = spec[field];
      if (typeof name !== 'string' || /^\d+$/.test(name) || known.has(name)) continue;
      const at = planned.get(name);
      if (at !== undefined && at < index) continue;
      const where = item.declaredAt ? ` (declared at ${item.declaredAt})` : '';
      throw new InputError(`${item.ref}${where}`, at === undefined
        ? `${field} "${name}" does not exist: it is not in ${host.root === '/' ? '' : host.root}${file} and no ${field === 'owner' ? 'User' : 'Group'} in this runlist declares it`
        : `${field} "${name}" is declared by ${declared[at]!.ref}, but after this resource; declare the account first`);
    }
  }
}
