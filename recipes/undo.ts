// What the recipes' undo share: files removed only while they hold what meshvm wrote (its record, or its marker), the rest noted.
import type { UndoContext } from '../engine/recipe.ts';
import type { Declared, DeclareOptions } from '../engine/resource.ts';
import { File } from '../resources/file.ts';
import { installedByMeshvm, installedPackage, Package } from '../resources/package.ts';
import { packageBackend } from '../resources/package/detect.ts';
import { readWritten, sha256, writtenRecord } from '../resources/written.ts';
import { LAST_RUN_FILE, WRITTEN_DIR } from '../engine/state-paths.ts';

/** The first line of every file meshvm renders with its marker (units, drop-ins, hooks). */
const MARKER = '# Managed by meshvm';

/**
 * Removes each file that is provably meshvm's: its content is what meshvm recorded writing (File track: true), or it opens
 * with meshvm's marker. Any other file at such a path is left, and said so: it may be the operator's. A record whose file
 * is gone already is removed too.
 */
export async function removeOwnFiles(ctx: UndoContext, paths: readonly (string | OwnFile)[], options: DeclareOptions = {}): Promise<Declared[]> {
  const own = await ownFiles(ctx, paths);
  const out: Declared[] = [];
  for (const path of paths.map(pathOf)) {
    if (own.includes(path)) out.push(File({ path, ensure: 'absent', track: true }, options));
    else if (!(await ctx.host.stat(path)) && (await readWritten(ctx.host, path))) out.push(File({ path: writtenRecord(path), ensure: 'absent' }));
  }
  return out;
}

/** A path, with the content the runlist itself says meshvm writes there when it says so (then that content proves it). */
export interface OwnFile {
  path: string;
  content?: string | undefined;
}
const pathOf = (file: string | OwnFile) => (typeof file === 'string' ? file : file.path);

/** Which of the paths hold files that are provably meshvm's (its record, its marker, the content declared); the others that exist are noted. */
export async function ownFiles(ctx: UndoContext, files: readonly (string | OwnFile)[]): Promise<string[]> {
  const own: string[] = [];
  for (const file of files) {
    const path = pathOf(file);
    const declared = typeof file === 'string' ? undefined : file.content;
    const stat = await ctx.host.stat(path);
    if (!stat) continue;
    const recorded = await readWritten(ctx.host, path);
    const content = stat.type === 'file' ? ((await ctx.host.readFile(path)) ?? '') : undefined;
    if (content !== undefined && ((recorded && recorded === sha256(content)) || content.startsWith(MARKER) || content === declared)) {
      own.push(path);
      continue;
    }
    ctx.note(
      `left ${path}: ${
        content === undefined
          ? `it is a ${stat.type}, not a file meshvm writes`
          : recorded
            ? 'its content changed since meshvm wrote it'
            : 'meshvm keeps no record of writing it (not written by meshvm, or by a meshvm older than offboarding)'
      }`,
    );
  }
  return own;
}

/**
 * A package purged, when meshvm installed it (its mark), with the links its maintainer scripts made that the purge leaves
 * (each removed only while it is that link); a package meshvm found installed is noted and left.
 */
export async function purgePackage(ctx: UndoContext, name: string, links: Record<string, string> = {}): Promise<Declared[]> {
  if (await installedByMeshvm(ctx.host, name)) {
    const left: Declared[] = [];
    for (const [link, target] of Object.entries(links)) {
      if ((await ctx.host.stat(link))?.type === 'symlink' && (await ctx.host.readLink(link)) === target) left.push(File({ path: link, ensure: 'absent' }));
    }
    return [Package({ name, ensure: 'absent', purge: true }), ...left];
  }
  const rpmHost = ctx.host.live && (await packageBackend(ctx.host)).kind === 'dnf';
  if (
    rpmHost
      ? (await installedPackage(ctx.host, name)) !== undefined
      : ctx.host.live && /^.i/.test((await ctx.host.query(['dpkg-query', '-W', '-f', '${db:Status-Abbrev}', name])).stdout)
  )
    ctx.note(`left the package ${name}: meshvm did not install it (no mark in /var/lib/meshvm)`);
  return [];
}

/**
 * Whether meshvm converged this machine, and the evidence: its last report is a converge's, or it keeps records of files
 * it wrote. Without either, only what carries meshvm's marker or ownership label is meshvm's; on a machine without any
 * report of meshvm's (never converged), the first undo to ask says so.
 */
export async function joinedByMeshvm(ctx: UndoContext): Promise<boolean> {
  return ctx.service('undo:joined', async () => {
    const text = await ctx.host.readFile(LAST_RUN_FILE);
    let last: 'joined' | 'offboarded' | undefined;
    try {
      const report = text === undefined ? undefined : (JSON.parse(text) as { offboard?: boolean; outcome?: string });
      // an offboard that failed or was interrupted took the machine only part of the way out
      if (report) last = report.offboard === true && (report.outcome === 'changed' || report.outcome === 'unchanged') ? 'offboarded' : 'joined';
    } catch {
      // a torn or hand-edited report proves nothing
    }
    const records = ((await ctx.host.listDir(WRITTEN_DIR)) ?? []).length > 0;
    // offboarded already (its report the last): nothing of meshvm's to stop, and nothing new to say
    if (last === undefined && !records)
      ctx.note(
        `found no sign that meshvm converged this machine (no report in ${LAST_RUN_FILE}, no record of files it wrote in ${WRITTEN_DIR}): removing only what carries meshvm's marker or its ownership label, leaving services as they are`,
      );
    return last === 'joined' || records;
  });
}
