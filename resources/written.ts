// What meshvm wrote into a tracked file: a sha256 kept under /var/lib/meshvm/written, so offboarding removes only its own files.
import { createHash } from 'node:crypto';
import type { Host, HostReader } from '../engine/host.ts';
import { WRITTEN_DIR } from '../engine/state-paths.ts';

/** Where the record of a path is kept: one file per path, its name the path URI-encoded. */
export const writtenRecord = (path: string) => `${WRITTEN_DIR}/${encodeURIComponent(path)}`;

export const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Notes that meshvm wrote this content to the path (after the write: a crash between leaves the file unrecorded, not a false record). */
export async function recordWritten(host: Host, path: string, content: string): Promise<void> {
  if (!(await host.stat(WRITTEN_DIR))) await host.mkdir(WRITTEN_DIR, { mode: 0o755, parents: true });
  await host.writeFile(writtenRecord(path), `${sha256(content)}\n`, { mode: 0o644, backup: false });
}

/** The sha256 meshvm last wrote to the path, or undefined when it keeps no record of writing it. */
export async function readWritten(host: HostReader, path: string): Promise<string | undefined> {
  return (await host.readFile(writtenRecord(path)))?.trim() || undefined;
}

export async function forgetWritten(host: Host, path: string): Promise<void> {
  if (await host.stat(writtenRecord(path))) await host.remove(writtenRecord(path));
}
