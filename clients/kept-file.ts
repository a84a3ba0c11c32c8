// What meshvm keeps of its own between runs under /run/meshvm (tmpfs): read only from a file it wrote, written through the run's Host.
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Host, HostReader } from '../engine/host.ts';

/** Where kept files live: tmpfs, so a boot starts with nothing kept. */
export const KEPT_DIR = '/run/meshvm';

/** A file that is not to be trusted: why, for the warning. */
export interface Untrusted {
  problem: string;
}

/**
 * The text of a kept file, or undefined when there is none. A file under /run is still outside input: one that is not a
 * plain file, is owned by another account, or others may read or write (any group/other bit) is refused, saying why.
 */
export async function readKeptFile(host: HostReader, file: string): Promise<string | Untrusted | undefined> {
  const stat = await host.stat(file).catch(() => undefined);
  if (!stat) return undefined;
  if (stat.type !== 'file') return { problem: `it is a ${stat.type}, not a plain file` };
  const uid = process.getuid?.() ?? 0;
  if (stat.uid !== uid) return { problem: `it is owned by uid ${stat.uid}, not by ${uid} (meshvm)` };
  if ((stat.mode & 0o077) !== 0) return { problem: `its mode is 0${stat.mode.toString(8)}, not 0600 (others could read or change it)` };
  const text = await host.readFile(file).catch(() => undefined);
  return text ?? undefined;
}

/** Writes a kept file whole or not at all, 0600 in a 0700 directory, through the Host's safe path walk (never through a link out of the root). */
export async function writeKeptFile(writer: Host, file: string, text: string, o: { sensitive?: boolean } = {}): Promise<void> {
  // root's (a file another account had put there is replaced, never kept as theirs); unprivileged (tests): its own
  const own = process.getuid?.() === 0 ? { owner: 'root', group: 'root' } : {};
  await writer.mkdir(path.posix.dirname(file), { mode: 0o700, ...own });
  await writer.writeFile(file, text, { mode: 0o600, backup: false, ...own, ...(o.sensitive && { sensitive: true }) });
}

/** The name of a configuration's kept file: a digest of its canonical JSON (the same whatever the order of its keys). */
export function configDigest(configuration: unknown): string {
  return createHash('sha256').update(canonicalJson(configuration)).digest('hex').slice(0, 16);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
