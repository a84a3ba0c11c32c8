// A package file (.deb or .rpm) given by path or https URL with its sha256: checked, fetched into meshvm's cache, marked once installed.
import type { Host, HostReader } from '../../engine/host.ts';
import type { PrepareContext } from '../../engine/resource.ts';
import { INSTALLED_DEBS_DIR } from '../../engine/state-paths.ts';

/** Where .debs fetched by URL are kept, under their sha256 (the previous one too, for putting it back after a failed upgrade). */
export const DEB_CACHE = '/var/cache/meshvm/debs';
/** The same for .rpms. */
export const RPM_CACHE = '/var/cache/meshvm/rpms';
/** The sha256 of the package file meshvm installed, one mark per package name (.deb and .rpm alike). */
export const INSTALLED_MARKS = INSTALLED_DEBS_DIR;

export type PackageFile = { path: string; sha256?: string | undefined } | { url: string; sha256: string; caFile?: string | undefined };
export type FileKind = 'deb' | 'rpm';

export const cachedFile = (kind: FileKind, name: string, sha256: string) => `${kind === 'deb' ? DEB_CACHE : RPM_CACHE}/${name}_${sha256}.${kind}`;
export const markOf = (name: string) => `${INSTALLED_MARKS}/${name}.sha256`;

export async function fileSha256(host: HostReader, file: string): Promise<string | undefined> {
  const result = await host.query(['sha256sum', host.realPath(file)]);
  return result.exitCode === 0 ? result.stdout.split(/\s/)[0] : undefined;
}

/** A local package file: there, and of the sha256 required when one is given. */
export async function checkLocalFile(host: HostReader, kind: FileKind, file: string, sha256: string | undefined): Promise<void> {
  if (!(await host.stat(file))) throw new Error(`the .${kind} ${file} does not exist`);
  if (sha256) {
    const got = await fileSha256(host, file);
    if (got !== sha256) throw new Error(`${file} has sha256 ${got}, not ${sha256}; refusing to install it`);
  }
}

/** The cached download, when it is there with the sha256 required. */
export async function cachedCopy(host: HostReader, kind: FileKind, name: string, sha256: string): Promise<string | undefined> {
  const cached = cachedFile(kind, name, sha256);
  return (await host.stat(cached))?.type === 'file' && (await fileSha256(host, cached)) === sha256 ? cached : undefined;
}

/** Downloads the package file into the cache (a wrong or corrupt cached copy replaced), recording what it created for preflight. */
export async function downloadToCache(
  host: Host,
  kind: FileKind,
  name: string,
  source: { url: string; sha256: string; caFile?: string | undefined },
  context?: PrepareContext,
) {
  const cached = cachedFile(kind, name, source.sha256);
  const dir = kind === 'deb' ? DEB_CACHE : RPM_CACHE;
  if (context) await context.directory(dir);
  else if (!(await host.stat(dir))) await host.mkdir(dir, { mode: 0o755, parents: true });
  const existed = Boolean(await host.stat(cached));
  const got = await host.download(source.url, cached, { sha256: source.sha256, caFile: source.caFile });
  if (!existed) context?.created(cached);
  return got;
}

/** A package file ready to install: a local file checked against its sha256, or the cached download (preflight put it there), checked again. */
export async function fetchFile(host: Host, kind: FileKind, name: string, source: PackageFile): Promise<string> {
  if ('path' in source) {
    await checkLocalFile(host, kind, source.path, source.sha256);
    return source.path;
  }
  const cached = await cachedCopy(host, kind, name, source.sha256);
  if (cached) return cached;
  await downloadToCache(host, kind, name, source);
  return cachedFile(kind, name, source.sha256);
}

/** Records the sha256 of the file a package was installed from (read by current, and by recipes deciding what to undo). */
export async function markInstalled(host: Host, name: string, sha256: string | undefined): Promise<void> {
  if (!sha256) return;
  if (!(await host.stat(INSTALLED_MARKS))) await host.mkdir(INSTALLED_MARKS, { mode: 0o755, parents: true });
  await host.writeFile(markOf(name), sha256 + '\n', { mode: 0o644, backup: false });
}
