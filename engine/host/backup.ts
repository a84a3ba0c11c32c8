// Backups of replaced files: a copy under the root's backup directory, written atomically, the last few of each kept.
import fs from 'node:fs/promises';
import path from 'node:path';
import { BACKUP_DIR, BACKUPS_KEPT } from '../state-paths.ts';
import type { RootPaths } from './root-paths.ts';

/** Keeps a copy of the file at guest path p (real path target) before it is replaced. */
export async function keepBackup(paths: RootPaths, p: string, target: string): Promise<void> {
  const dir = paths.real(BACKUP_DIR);
  await paths.assertInside(path.join(dir, 'backup'));
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const stem = encodeURIComponent(p);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  // copied under a temp name and renamed: a run killed mid-copy leaves no torn backup (the leftover is replaced next time)
  const temp = path.join(dir, `.${stem}.meshvm-new`);
  await fs.rm(temp, { force: true });
  await fs.copyFile(target, temp);
  await fs.chmod(temp, 0o600);
  await fs.rename(temp, path.join(dir, `${stem}.${stamp}`));
  const kept = (await fs.readdir(dir)).filter((name) => name.startsWith(stem + '.')).sort();
  for (const old of kept.slice(0, Math.max(0, kept.length - BACKUPS_KEPT))) await fs.rm(path.join(dir, old), { force: true });
}
