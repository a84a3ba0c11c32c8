// Owner, group and mode repaired in place, without rewriting the content: what File, Directory and DnsmasqConfig share.
import type { Host } from '../engine/host.ts';

type Wanted = { owner?: string | undefined; group?: string | undefined; mode?: number | undefined };
type Differs = { owner?: unknown; group?: unknown; mode?: unknown };

/** chown first (it may clear setuid/setgid bits), then the mode, which a chown also makes due again. */
export async function fixOwnership(host: Host, path: string, want: Wanted, changes: Differs): Promise<void> {
  const owned = Boolean(changes.owner || changes.group);
  if (owned) await host.chown(path, { owner: want.owner, group: want.group });
  if (want.mode !== undefined && (changes.mode || owned)) await host.chmod(path, want.mode);
}
