// Directory: exists with a mode, owner and group; parents created on the way.
import { z } from 'zod';
import { compareFields, defineResource, type Changes } from '../engine/resource.ts';
import { accountName, fileMode, guestPath } from '../engine/validate.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { fixOwnership } from './ownership.ts';
import { describePresence, formatModeField, ownedPathRequires } from './fields.ts';

export const directorySpec = z.strictObject({
  path: guestPath,
  mode: fileMode.optional(),
  owner: accountName.optional(),
  group: accountName.optional(),
  /** Create missing parent directories (root-owned, 0755). */
  parents: z.boolean().default(true),
  /** absent: removed when it is empty (what is in it is not this resource's to remove); a directory with files in it stays. */
  ensure: z.enum(['present', 'absent']).default('present'),
});
export type DirectorySpec = z.output<typeof directorySpec>;

export interface DirectoryState {
  ensure: 'present' | 'absent';
  mode: number;
  owner: string;
  group: string;
  /** Read for ensure: absent only. */
  empty?: boolean;
}

export const directoryType = {
  kind: 'directory',
  readAhead: true,
  schema: directorySpec,
  key: (spec: DirectorySpec) => spec.path,
  requires: (spec: DirectorySpec) => ownedPathRequires(spec).filter((r) => !('path' in r) || !spec.parents),
  provides: (spec: DirectorySpec) => (spec.ensure === 'absent' ? [] : [{ path: spec.path }]),
  describe: describePresence,
  format: formatModeField,

  async current(host: HostReader, spec: DirectorySpec): Promise<DirectoryState | undefined> {
    const stat = await host.stat(spec.path);
    if (!stat) return undefined;
    if (spec.ensure === 'absent' && stat.type !== 'directory') return undefined; // something else: not this resource's
    if (stat.type !== 'directory') throw new Error(`${spec.path} exists and is a ${stat.type}, not a directory`);
    const empty = spec.ensure === 'absent' ? ((await host.listDir(spec.path)) ?? []).length === 0 : undefined;
    return { ensure: 'present', mode: stat.mode, owner: stat.owner, group: stat.group, ...(empty !== undefined && { empty }) };
  },

  changes(spec: DirectorySpec, current: DirectoryState | undefined): Changes<DirectoryState> {
    if (spec.ensure === 'absent') return current?.empty ? { ensure: { from: 'present', to: 'absent' } } : {};
    const changes = compareFields(spec, current, ['mode', 'owner', 'group']);
    return current ? changes : { ensure: { from: 'absent', to: 'present' }, ...changes };
  },

  async apply(host: Host, spec: DirectorySpec, changes: Changes<DirectoryState>, current: DirectoryState | undefined): Promise<void> {
    if (spec.ensure === 'absent') return host.remove(spec.path);
    if (!current) {
      await host.mkdir(spec.path, { mode: spec.mode, owner: spec.owner, group: spec.group, parents: spec.parents });
      return;
    }
    await fixOwnership(host, spec.path, spec, changes);
  },
};

export const Directory = defineResource(directoryType);
