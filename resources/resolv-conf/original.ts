// The resolver files a machine had before meshvm replaced them, kept on the first replacement so offboarding puts them back byte for byte.
import { z } from 'zod';
import type { HostReader } from '../../engine/host.ts';
import { BACKUP_DIR, STATE_DIR } from '../../engine/state-paths.ts';
import { MARKER, RESOLV_CONF } from './spec.ts';

/** Where the originals are kept: one JSON record per replaced path. */
export const ORIGINALS_DIR = `${STATE_DIR}/resolver-originals`;
export const originalRecord = (path: string) => `${ORIGINALS_DIR}/${encodeURIComponent(path)}.json`;

/** What was at a path before meshvm: a file (its bytes, mode, owner), a symlink (its target as written), or nothing. */
export const original = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('file'), content: z.string(), mode: z.number().int(), owner: z.string(), group: z.string() }),
  z.strictObject({ type: z.literal('symlink'), target: z.string().min(1) }),
  z.strictObject({ type: z.literal('missing') }),
]);
export type Original = z.output<typeof original>;

/** The record's text (what ResolvConf writes before it replaces the path). */
export const renderOriginal = (found: Original) => `${JSON.stringify(found, null, 2)}\n`;

/** What is at the path now, to keep: undefined when it is meshvm's own (its marker), which is no original. */
export async function readOriginal(host: HostReader, path: string): Promise<Original | undefined> {
  const stat = await host.stat(path);
  if (!stat) return { type: 'missing' };
  if (stat.type === 'symlink') return { type: 'symlink', target: (await host.readLink(path)) ?? '' };
  if (stat.type !== 'file') return undefined;
  const content = (await host.readFile(path)) ?? '';
  if (content.startsWith(MARKER)) return undefined;
  return { type: 'file', content, mode: stat.mode & 0o7777, owner: stat.owner, group: stat.group };
}

/**
 * The original kept for a path: its record; for a machine converged before records were kept, the newest backup of the
 * path that is not meshvm's own (its bytes; mode 0644, root's); undefined when neither is there.
 */
export async function keptOriginal(host: HostReader, path: string): Promise<{ original: Original; from: 'record' | 'backup' } | undefined> {
  const text = await host.readFile(originalRecord(path));
  if (text !== undefined) {
    try {
      return { original: original.parse(JSON.parse(text)), from: 'record' };
    } catch (error) {
      throw new Error(`${originalRecord(path)} is not a record meshvm wrote (${(error as Error).message.split('\n')[0]}); move it away`);
    }
  }
  const stem = `${encodeURIComponent(path)}.`;
  const backups = ((await host.listDir(BACKUP_DIR)) ?? []).filter((name) => name.startsWith(stem)).sort();
  for (const name of backups.reverse()) {
    const content = await host.readFile(`${BACKUP_DIR}/${name}`);
    if (content !== undefined && !content.startsWith(MARKER))
      return { original: { type: 'file', content, mode: 0o644, owner: 'root', group: 'root' }, from: 'backup' };
  }
  return undefined;
}

/** The paths a strategy replaces that were there before meshvm (the others, its drop-ins and hook, it creates). */
export const SHARED_PATHS = new Set([RESOLV_CONF, '/etc/resolvconf/resolv.conf.d/head', '/etc/resolvconf/resolv.conf.d/base']);
