// File: a regular file's content, mode, owner and group, written atomically, optionally verified before it goes live.
import { z } from 'zod';
import { compareFields, defineResource, type Changes } from '../engine/resource.ts';
import { accountName, fileMode, guestPath } from '../engine/validate.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { fixOwnership } from './ownership.ts';
import { NotInRootError } from '../engine/host/confine.ts';
import { certificateExpiry } from './expiry.ts';
import { describePresence, formatModeField, ownedPathRequires } from './fields.ts';
import { forgetWritten, recordWritten } from './written.ts';

export const fileSpec = z.strictObject({
  path: guestPath,
  content: z.string().optional(),
  mode: fileMode.optional(),
  owner: accountName.optional(),
  group: accountName.optional(),
  ensure: z.enum(['present', 'absent']).default('present'),
  /**
   * argv run on the staged file before it replaces the live one; "%{path}" is the staged file's path. It runs inside the
   * root (under --root, confined to it) unless verifyOnHost says it runs on this machine (a checker such as dnsmasq --test).
   */
  verify: z.array(z.string()).min(1).optional(),
  verifyOnHost: z.boolean().default(false),
  /** The content is a secret: never shown in plan, reports or errors; the file is 0600 unless a mode is given, and no backups of it are kept. */
  sensitive: z.boolean().default(false),
  /** Keep the replaced file under /var/lib/meshvm/backup. */
  backup: z.boolean().default(true),
  /**
   * Keep a record of the content meshvm writes (/var/lib/meshvm/written), so that offboarding can tell the file is its own;
   * with ensure: absent, the record goes with the file.
   */
  track: z.boolean().default(false),
});
export type FileSpec = z.output<typeof fileSpec>;

/** The mode a file must have: the spec's, or 0600 for a sensitive file that gives none (a secret is never created 0644). */
export const wantedMode = (spec: FileSpec): number | undefined => spec.mode ?? (spec.sensitive ? 0o600 : undefined);

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
  readAhead: true,
  schema: fileSpec,
  key: (spec: FileSpec) => spec.path,
  sensitive: (spec: FileSpec) => (spec.sensitive ? (['content'] as const) : []),
  requires: ownedPathRequires,
  describe: describePresence,
  format: formatModeField,

  /** A file of certificates (not a secret): the earliest end of validity among them. */
  async expiry(_host: HostReader, spec: FileSpec) {
    return spec.ensure === 'present' && !spec.sensitive && spec.content !== undefined ? certificateExpiry(spec.content) : undefined;
  },

  async current(host: HostReader, spec: FileSpec): Promise<FileState | undefined> {
    const stat = await host.stat(spec.path);
    if (!stat) return undefined;
    const content = stat.type === 'file' ? ((await host.readFile(spec.path)) ?? '') : '';
    return { ensure: 'present', type: stat.type, content, mode: stat.mode, owner: stat.owner, group: stat.group };
  },

  changes(spec: FileSpec, current: FileState | undefined): Changes<FileState> {
    if (spec.ensure === 'absent') return current ? { ensure: { from: 'present', to: 'absent' } } : {};
    const changes = compareFields({ ...spec, mode: wantedMode(spec) }, current, ['content', 'mode', 'owner', 'group']);
    if (!current) return { ensure: { from: 'absent', to: 'present' }, ...changes };
    if (current.type !== 'file') return { type: { from: current.type, to: 'file' }, ...changes };
    return changes;
  },

  async apply(host: Host, spec: FileSpec, changes: Changes<FileState>, current: FileState | undefined): Promise<void> {
    if (spec.ensure === 'absent') {
      await host.remove(spec.path);
      if (spec.track) await forgetWritten(host, spec.path);
      return;
    }
    if (current?.type === 'directory') throw new Error(`${spec.path} is a directory; meshvm will not replace a directory with a file`);
    if (!current || changes.content || changes.type) {
      const verify = spec.verify;
      const content = spec.content ?? (current?.type === 'file' ? current.content : '');
      await host.writeFile(spec.path, content, {
        mode: wantedMode(spec),
        owner: spec.owner,
        group: spec.group,
        backup: spec.backup,
        sensitive: spec.sensitive,
        verify: verify && ((staged) => runVerify(host, verify, staged, spec.verifyOnHost, spec.path, spec.sensitive ? undefined : content)),
      });
      if (spec.track) await recordWritten(host, spec.path, content);
      return;
    }
    await fixOwnership(host, spec.path, { ...spec, mode: wantedMode(spec) }, changes);
  },
};

/** The verify command on the staged file: inside the root (its guest path) unless it runs on the host (its real path). */
/** `content` (to quote the line a checker names) is undefined for a sensitive file: a short secret line escapes redaction. */
async function runVerify(host: HostReader, argv: readonly string[], staged: string, onHost: boolean, path: string, content: string | undefined): Promise<void> {
  const stagedPath = onHost || host.live ? staged : staged.slice(host.root.length);
  const command = argv.map((arg) => arg.replaceAll('%{path}', stagedPath));
  const result = await host.query(command, { in: onHost ? 'host' : 'root' }).catch((error: Error) => {
    const why =
      error instanceof NotInRootError
        ? `it runs inside the root ${error.root}, but ${error.why}; set verifyOnHost: true to run it on this machine`
        : error.message;
    throw new Error(`verify command \`${argv.join(' ')}\` was not run: ${why}; the live ${path} was left untouched`);
  });
  if (result.exitCode !== 0) {
    const said = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-6).join('\n').replaceAll(stagedPath, `the new ${path}`);
    // a checker that names a line of the file (dnsmasq: "error at line 12 of FILE"): that line, so the reader need not look
    const lineNo = Number(/line (\d+) of /.exec(said)?.[1]);
    const offending = lineNo ? content?.split('\n')[lineNo - 1] : undefined;
    throw new Error(
      `verify command \`${argv.join(' ')}\` refused the new content (exit ${result.exitCode})${said ? `:\n  ${said.replaceAll('\n', '\n  ')}` : ''}` +
        (offending !== undefined ? `\n  line ${lineNo}: ${offending}` : '') +
        `\n  the live ${path} was left untouched`,
    );
  }
}

export const File = defineResource(fileType);
