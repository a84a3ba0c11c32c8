// File: a regular file's content, mode, owner and group, written atomically, optionally verified before it goes live.
import { z } from 'zod';
import { compareFields, defineResource, type Changes } from '../engine/resource.ts';
import { accountName, fileMode, guestPath } from '../engine/validate.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { fixOwnership } from './ownership.ts';

export const fileSpec = z.strictObject({
  path: guestPath,
  content: z.string().optional(),
  mode: fileMode.optional(),
  owner: accountName.optional(),
  group: accountName.optional(),
  ensure: z.enum(['present', 'absent']).default('present'),
  /** argv run on the staged file before it replaces the live one; "%{path}" is the staged file's path. */
  verify: z.array(z.string()).min(1).optional(),
  /** The content is a secret: never shown in plan, reports or errors. */
  sensitive: z.boolean().default(false),
  /** Keep the replaced file under /var/lib/meshvm/backup. */
  backup: z.boolean().default(true),
});
export type FileSpec = z.output<typeof fileSpec>;

export interface FileState {
  ensure: 'present' | 'absent';
  type: 'file' | 'directory' | 'symlink' | 'other';
  content: string;
  mode: number;
  owner: string;
  group: string;
}

export const fileType = {
  kind: 'file',
  schema: fileSpec,
  key: (spec: FileSpec) => spec.path,
  sensitive: (spec: FileSpec) => (spec.sensitive ? (['content'] as const) : []),

  async current(host: HostReader, spec: FileSpec): Promise<FileState | undefined> {
    const stat = await host.stat(spec.path);
    if (!stat) return undefined;
    const content = stat.type === 'file' ? ((await host.readFile(spec.path)) ?? '') : '';
    return { ensure: 'present', type: stat.type, content, mode: stat.mode, owner: stat.owner, group: stat.group };
  },

  changes(spec: FileSpec, current: FileState | undefined): Changes<FileState> {
    if (spec.ensure === 'absent') return current ? { ensure: { from: 'present', to: 'absent' } } : {};
    const changes = compareFields(spec, current, ['content', 'mode', 'owner', 'group']);
    if (!current) return { ensure: { from: 'absent', to: 'present' }, ...changes };
    if (current.type !== 'file') return { type: { from: current.type, to: 'file' }, ...changes };
    return changes;
  },

  async apply(host: Host, spec: FileSpec, changes: Changes<FileState>, current: FileState | undefined): Promise<void> {
    if (spec.ensure === 'absent') return host.remove(spec.path);
    if (current?.type === 'directory') throw new Error(`${spec.path} is a directory; meshvm will not replace a directory with a file`);
    if (!current || changes.content || changes.type) {
      const verify = spec.verify;
      await host.writeFile(spec.path, spec.content ?? (current?.type === 'file' ? current.content : ''), {
        mode: spec.mode,
        owner: spec.owner,
        group: spec.group,
        backup: spec.backup,
        verify: verify && ((staged) => runVerify(host, verify, staged)),
      });
      return;
    }
    await fixOwnership(host, spec.path, spec, changes);
  },
};

async function runVerify(host: HostReader, argv: readonly string[], staged: string): Promise<void> {
  const command = argv.map((arg) => arg.replaceAll('%{path}', staged));
  const result = await host.query(command);
  if (result.exitCode !== 0) {
    const said = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-6).join('\n');
    throw new Error(`verify command \`${argv.join(' ')}\` refused the new content (exit ${result.exitCode})${said ? `:\n  ${said.replaceAll(staged, '<staged file>')}` : ''}\n  the live file was left untouched`);
  }
}

export const File = defineResource(fileType);
