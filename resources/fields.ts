// How the fields resources share read in plan and report: presence (create/remove) and permission modes (0644).
import { formatMode } from '../engine/host.ts';
import type { Requirement } from '../engine/resource.ts';

/** `ensure` reads as "create" or "remove". */
export function describePresence(field: string, change: { from: unknown; to: unknown }): string | undefined {
  if (field !== 'ensure') return undefined;
  return change.to === 'absent' ? 'remove' : 'create';
}

/** A mode reads as people write it: 0644, 2755. */
export function formatModeField(field: string, value: unknown): string | undefined {
  return field === 'mode' && typeof value === 'number' ? formatMode(value) : undefined;
}

/** A file or directory needs its owner and group to exist, and its parent directory (ordering only: it may come from a package). */
export function ownedPathRequires(spec: { path: string; owner?: string | undefined; group?: string | undefined }): Requirement[] {
  const out: Requirement[] = [];
  if (spec.owner !== undefined) out.push({ account: 'user', name: spec.owner });
  if (spec.group !== undefined) out.push({ account: 'group', name: spec.group });
  const parent = spec.path.slice(0, spec.path.lastIndexOf('/')) || '/';
  if (parent !== spec.path) out.push({ path: parent });
  return out;
}
