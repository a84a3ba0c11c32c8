// Backups of replaced files: a copy under the root's backup directory (reached by the safe walk), written atomically, the last few of each kept.
import fs from 'node:fs/promises';
import { BACKUP_DIR, BACKUPS_KEPT } from '../state-paths.ts';
import { CREATE_NEW, failure, stagedName, unlinkIfThere, type SafeRoot } from './safe-path.ts';

/** Keeps `content`, the file at guest path p before it is replaced. */
export async function keepBackup(safe: SafeRoot, p: string, content: Buffer): Promise<void> {
  // with `create` the walk gives a directory or throws
  const dir = (await safe.openDir(BACKUP_DIR, { mode: 0o700 }).catch((error) => {
    throw new Error(`cannot keep a backup of ${p} in ${BACKUP_DIR}: ${error.message}`);
  }))!;
  const stem = encodeURIComponent(p);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  // written under a temp name and renamed: a run killed mid-copy leaves no torn backup (the leftover is replaced next time)
  const temp = stagedName(stem);
  try {
    await unlinkIfThere(dir.at(temp));
    const handle = await fs.open(dir.at(temp), CREATE_NEW, 0o600);
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(dir.at(temp), dir.at(`${stem}.${stamp}`));
    const kept = (await fs.readdir(dir.at('.'))).filter((name) => isBackupOf(name, stem)).sort();
    for (const old of kept.slice(0, Math.max(0, kept.length - BACKUPS_KEPT))) await unlinkIfThere(dir.at(old));
  } catch (error) {
    throw failure(error, 'keep a backup of', p, dir);
  } finally {
    await dir.close();
  }
}

/** Removes the backups of guest path p (a sensitive file keeps none: its old secrets are not kept around). */
export async function dropBackups(safe: SafeRoot, p: string): Promise<void> {
  const dir = await safe.openDir(BACKUP_DIR);
  if (!dir) return;
  const stem = encodeURIComponent(p);
  try {
    for (const name of await fs.readdir(dir.at('.'))) if (isBackupOf(name, stem) || name === stagedName(stem)) await unlinkIfThere(dir.at(name));
  } finally {
    await dir.close();
  }
}

/** A backup of the file with this stem: `<stem>.<timestamp>` (the backups of /etc/a are not those of /etc/a.b). */
function isBackupOf(name: string, stem: string): boolean {
  return name.startsWith(`${stem}.`) && /^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/.test(name.slice(stem.length + 1));
}
