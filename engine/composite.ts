// Composite resources: the parts a kind declares from its spec and what it read, with nested refs, checked against the runlist.
import { isDeepStrictEqual } from 'node:util';
import { InputError } from './errors.ts';
import type { HostReader } from './host.ts';
import { flatten, isAction, type Action, type Declaration, type Declared } from './resource.ts';

/** The separator of nested refs: `systemd_unit[x] > file[/etc/systemd/system/x]`. */
export const PART_OF = ' > ';

/**
 * A composite's parts in order: each declaration gets a nested ref and its parent's declaration line; an action stays as
 * it is. A part that is also declared on its own with a different spec is an error naming both declaration lines.
 */
export function expandChildren(parent: Declared, current: unknown, declared: ReadonlyMap<string, Declared>): (Declared | Action)[] {
  const out: (Declared | Action)[] = [];
  for (const part of parent.type.children!(parent.spec, current)) {
    if (isAction(part)) {
      out.push(part);
      continue;
    }
    for (const child of flatten(part as Declaration)) {
      const other = declared.get(child.ref);
      if (other && !isDeepStrictEqual(other.spec, child.spec)) {
        throw new InputError(
          child.ref,
          `declared twice with different specs: at ${other.declaredAt ?? 'an unknown line'} and, as a part of ${parent.ref}, at ${parent.declaredAt ?? 'an unknown line'}; declare it once, or let ${parent.ref} own it`,
        );
      }
      out.push({ ...child, ref: `${parent.ref}${PART_OF}${child.ref}`, declaredAt: parent.declaredAt, partOf: parent.ref });
    }
  }
  return out;
}

/**
 * What a composite reads, kept as a fact of the host: the runner reuses the plan-time read while nothing has changed
 * the machine since (a no-op converge reads each composite once), and reads again after any change.
 */
export function readComposite(host: HostReader, item: Declared): Promise<unknown> {
  return host.memo(`composite:${item.ref}`, () => item.type.current(host, item.spec));
}

/**
 * At plan time, before anything changes: every composite's parts as the machine is now, so a part that conflicts with
 * another declaration fails the plan (the runner checks again when it converges the composite).
 */
export async function checkComposites(declared: readonly Declared[], host: HostReader): Promise<void> {
  const byRef = new Map(declared.map((d) => [d.ref, d]));
  for (const item of declared) {
    if (!item.type.children) continue;
    let current: unknown;
    try {
      current = await readComposite(host, item);
    } catch {
      continue; // the runner reports a read that fails, in its place in the run
    }
    expandChildren(item, current, byRef);
  }
}
