// Symlink: a symbolic link at a path pointing at a target, replaced atomically when it points elsewhere.
import { z } from 'zod';
import { compareFields, defineResource, type Changes } from '../engine/resource.ts';
import { guestPath } from '../engine/validate.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { describePresence, ownedPathRequires } from './fields.ts';

export const symlinkSpec = z.strictObject({
  path: guestPath,
  /** What the link points at, as written into the link (absolute paths are inside the root, as the machine sees them). */
  target: z
    .string()
    .min(1)
    .refine((v) => !v.includes('\0'), 'must not contain a NUL byte'),
});
export type SymlinkSpec = z.output<typeof symlinkSpec>;

export interface SymlinkState {
  ensure: 'present';
  target: string;
}

export const symlinkType = {
  kind: 'symlink',
  readAhead: true,
  schema: symlinkSpec,
  key: (spec: SymlinkSpec) => spec.path,
  requires: ownedPathRequires,
  describe: describePresence,

  async current(host: HostReader, spec: SymlinkSpec): Promise<SymlinkState | undefined> {
    const stat = await host.stat(spec.path);
    if (!stat) return undefined;
    if (stat.type === 'directory') throw new Error(`${spec.path} is a directory; meshvm will not replace a directory with a link`);
    // a file in its place reads as a link to nowhere: it is replaced (and kept as a backup by the host only for files meshvm writes)
    return { ensure: 'present', target: stat.type === 'symlink' ? ((await host.readLink(spec.path)) ?? '') : '' };
  },

  changes(spec: SymlinkSpec, current: SymlinkState | undefined): Changes<SymlinkState> {
    const changes = compareFields(spec, current, ['target']);
    return current ? changes : { ensure: { from: undefined, to: 'present' }, ...changes };
  },

  async apply(host: Host, spec: SymlinkSpec): Promise<void> {
    await host.symlink(spec.target, spec.path);
  },
};

export const Symlink = defineResource(symlinkType);
