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
});
export type DirectorySpec = z.output<typeof directorySpec>;

export interface DirectoryState {
  ensure: 'present' | 'absent';
  mode: number;
  owner: string;
  group: string;
}

export const directoryType = {
  kind: 'directory',
  schema: directorySpec,
  key: (spec: DirectorySpec) => spec.path,
  requires: (spec: DirectorySpec) => ownedPathRequires(spec).filter((r) => !('path' in r) || !spec.parents),
  provides: (spec: DirectorySpec) => [{ path: spec.path }],
  describe: describePresence,
  format: formatModeField,

  async current(host: HostReader, spec: DirectorySpec): Promise<DirectoryState | undefined> {
    const stat = await host.stat(spec.path);
    if (!stat) return undefined;
    if (stat.type !== 'directory') throw new Error(`${spec.path} exists and is a ${stat.type}, not a directory`);
    return { ensure: 'present', mode: stat.mode, owner: stat.owner, group: stat.group };
  },

  changes(spec: DirectorySpec, current: DirectoryState | undefined): Changes<DirectoryState> {
    const changes = compareFields(spec, current, ['mode', 'owner', 'group']);
    return current ? changes : { ensure: { from: 'absent', to: 'present' }, ...changes };
  },

  async apply(host: Host, spec: DirectorySpec, changes: Changes<DirectoryState>, current: DirectoryState | undefined): Promise<void> {
    if (!current) {
      await host.mkdir(spec.path, { mode: spec.mode, owner: spec.owner, group: spec.group, parents: spec.parents });
      return;
    }
    await fixOwnership(host, spec.path, spec, changes);
  },
};

export const Directory = defineResource(directoryType);
