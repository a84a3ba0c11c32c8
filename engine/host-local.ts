// localHost: the Host for this machine, every guest path mapped under a root, commands optionally in a network namespace.
import fs from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import path from 'node:path';
import type { Accounts, CommandOptions, CommandResult, FileStat, Host, MkdirOptions, WriteOptions } from './host.ts';
import { CommandError } from './errors.ts';
import { mapUnderRoot } from './paths.ts';
import { parseGroup, parsePasswd } from './accounts.ts';

export const BACKUP_DIR = '/var/lib/meshvm/backup';
export const BACKUPS_KEPT = 5;

export interface LocalHostOptions {
  root?: string;
  netns?: string;
  /** Lines of every command run are passed here (for verbose output). */
  onCommand?: (argv: readonly string[]) => void;
}

let execaModule: Promise<typeof import('execa')> | undefined;
const loadExeca = () => (execaModule ??= import('execa'));

export function localHost(options: LocalHostOptions = {}): Host {
  const root = path.resolve(options.root ?? '/');
  const netns = options.netns;
  const facts = new Map<string, Promise<unknown>>();
  const real = (guestPath: string) => mapUnderRoot(root, guestPath);

  async function accounts(): Promise<Accounts> {
    return memo('accounts', async () => {
      const users = parsePasswd((await readFile('/etc/passwd')) ?? '');
      const groups = parseGroup((await readFile('/etc/group')) ?? '');
      // root is uid 0 on every system, even in a scratch root whose /etc/passwd does not list it
      if (!users.has('root')) users.set('root', { name: 'root', uid: 0, gid: 0, comment: '', home: '/root', shell: '/bin/sh' });
      if (!groups.has('root')) groups.set('root', { name: 'root', gid: 0, members: [] });
      return { users, groups };
    });
  }

  function memo<T>(key: string, compute: () => Promise<T>): Promise<T> {
    let value = facts.get(key) as Promise<T> | undefined;
    if (!value) {
      value = compute();
      facts.set(key, value);
      value.catch(() => facts.delete(key));
    }
    return value;
  }

  let rootReal: Promise<string> | undefined;
  /** For reads under a non-/ root: symlinks resolved inside the root, as a chroot would, never out to this machine's files. */
  async function readable(guestPath: string, depth = 0): Promise<string> {
    const target = real(guestPath);
    if (root === '/') return target;
    rootReal ??= fs.realpath(root);
    const top = await rootReal;
    const resolved = await fs.realpath(target).catch(() => undefined);
    if (resolved && (resolved === top || resolved.startsWith(top + '/'))) return resolved;
    // an absolute link (/etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf) means a path inside the root
    let current = '';
    for (const part of guestPath.split('/').filter(Boolean)) {
      const next = `${current}/${part}`;
      const link = await fs.readlink(path.join(root, next)).catch(() => undefined);
      if (link === undefined) {
        current = next;
        continue;
      }
      if (depth > 40) throw Object.assign(new Error(`too many levels of symbolic links at ${guestPath}`), { code: 'ELOOP' });
      const joined = path.posix.normalize(link.startsWith('/') ? link : `${current || '/'}/${link}`);
      current = (await readable(joined === '/' ? '/' : joined.replace(/\/$/, ''), depth + 1)).slice(root.length) || '/';
    }
    return path.join(root, current);
  }

  async function readFile(p: string): Promise<string | undefined> {
    try {
      return await fs.readFile(await readable(p), 'utf8');
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  async function stat(p: string): Promise<FileStat | undefined> {
    let s;
    try {
      s = await fs.lstat(real(p));
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
    const { users, groups } = await accounts();
    return {
      type: s.isFile() ? 'file' : s.isDirectory() ? 'directory' : s.isSymbolicLink() ? 'symlink' : 'other',
      mode: s.mode & 0o7777,
      uid: s.uid,
      gid: s.gid,
      owner: nameOfId(users, s.uid, (a) => a.uid),
      group: nameOfId(groups, s.gid, (g) => g.gid),
      size: s.size,
    };
  }

  async function ids(p: string, to: { owner?: string | undefined; group?: string | undefined }): Promise<{ uid: number; gid: number }> {
    const { users, groups } = await accounts();
    const uid = to.owner === undefined ? -1 : idOf(users, to.owner, (a) => a.uid, 'user', p);
    const gid = to.group === undefined ? -1 : idOf(groups, to.group, (g) => g.gid, 'group', p);
    return { uid, gid };
  }

  /** Refuses to follow a symlink out of a non-/ root (a scratch root must stay a scratch root). */
  async function insideRoot(hostPath: string): Promise<void> {
    if (root === '/') return;
    const dir = await fs.realpath(path.dirname(hostPath)).catch(() => undefined);
    const top = await fs.realpath(root);
    if (dir && dir !== top && !dir.startsWith(top + '/')) {
      throw new Error(`${hostPath} resolves outside the root ${root} (through a symlink)`);
    }
  }

  async function writeFile(p: string, content: string, opts: WriteOptions = {}): Promise<void> {
    const target = real(p);
    await insideRoot(target);
    const dir = path.dirname(target);
    const existing = await fs.lstat(target).catch(() => undefined);
    if (!(await fs.stat(dir).catch(() => undefined))?.isDirectory()) {
      throw new Error(`cannot write ${p}: its directory ${path.dirname(p)} does not exist (declare a Directory for it)`);
    }
    const { uid, gid } = await ids(p, opts);
    const mode = opts.mode ?? (existing?.isFile() ? existing.mode & 0o7777 : 0o644);
    // a fixed temp name: a leftover from a killed run is replaced, never accumulated (the run lock excludes a concurrent writer)
    const temp = path.join(dir, `.${path.basename(target)}.meshvm-new`);
    await fs.rm(temp, { force: true });
    const handle = await fs.open(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      try {
        const keepUid = uid === -1 && existing ? existing.uid : uid;
        const keepGid = gid === -1 && existing ? existing.gid : gid;
        if (keepUid !== -1 || keepGid !== -1) await handle.chown(keepUid, keepGid);
        await handle.chmod(mode);
        await handle.writeFile(content, 'utf8');
        await handle.sync();
      } finally {
        await handle.close();
      }
      if (opts.verify) await opts.verify(temp);
      if (existing?.isFile() && opts.backup !== false) await backup(p, target);
      await fs.rename(temp, target);
    } catch (error) {
      await fs.rm(temp, { force: true });
      throw error;
    }
    facts.clear();
    await syncDir(dir);
  }

  async function backup(p: string, target: string): Promise<void> {
    const dir = real(BACKUP_DIR);
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

  async function mkdir(p: string, opts: MkdirOptions = {}): Promise<void> {
    const target = real(p);
    await insideRoot(target);
    const { uid, gid } = await ids(p, opts);
    if (opts.parents === false && !(await fs.stat(path.dirname(target)).catch(() => undefined))?.isDirectory()) {
      throw new Error(`cannot create ${p}: its parent ${path.dirname(p)} does not exist and parents is false`);
    }
    await fs.mkdir(target, { recursive: opts.parents !== false, mode: 0o755 });
    if (uid !== -1 || gid !== -1) await fs.lchown(target, uid, gid);
    await fs.chmod(target, opts.mode ?? 0o755);
    facts.clear();
  }

  async function run(argv: readonly string[], opts: CommandOptions = {}): Promise<CommandResult> {
    facts.clear();
    return exec(argv, opts);
  }

  async function exec(argv: readonly string[], opts: CommandOptions): Promise<CommandResult> {
    const full = netns ? ['ip', 'netns', 'exec', netns, ...argv] : [...argv];
    options.onCommand?.(full);
    const { execa } = await loadExeca();
    const [file, ...args] = full as [string, ...string[]];
    const result = await execa(file, args, {
      input: opts.input ?? '',
      env: { LC_ALL: 'C', ...opts.env },
      timeout: opts.timeoutMs ?? 300_000,
      reject: false,
      stripFinalNewline: false,
    });
    if (result.failed && result.exitCode === undefined) {
      throw new CommandError(full, undefined, result.originalMessage ?? result.shortMessage ?? 'failed');
    }
    const out = { stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? ''), exitCode: result.exitCode ?? 1 };
    if (out.exitCode !== 0 && !opts.allowFailure) throw new CommandError(full, out.exitCode, out.stderr, out.stdout);
    return out;
  }

  async function download(url: string, p: string, opts: { sha256: string; caFile?: string | undefined; timeoutMs?: number }): Promise<void> {
    const target = real(p);
    await insideRoot(target);
    const temp = path.join(path.dirname(target), `.${path.basename(target)}.meshvm-new`);
    await fs.rm(temp, { force: true });
    try {
      const got = await fetchToFile(url, temp, { ca: opts.caFile ? await fs.readFile(opts.caFile, 'utf8') : undefined, timeoutMs: opts.timeoutMs ?? 300_000 });
      if (got !== opts.sha256.toLowerCase()) {
        throw new Error(`the download of ${url} has sha256 ${got}, not the ${opts.sha256} the spec requires; refusing it`);
      }
      await fs.rename(temp, target);
    } finally {
      await fs.rm(temp, { force: true });
    }
    facts.clear();
  }

  return {
    root,
    live: root === '/',
    netns,
    download,
    realPath: real,
    readFile,
    stat,
    accounts,
    memo,
    async readLink(p) {
      return fs.readlink(real(p)).catch((error) => (isMissing(error) || error.code === 'EINVAL' ? undefined : Promise.reject(error)));
    },
    async listDir(p) {
      return fs.readdir(real(p)).catch((error) => (isMissing(error) ? undefined : Promise.reject(error)));
    },
    query: (argv, opts = {}) => exec(argv, { ...opts, allowFailure: true }),
    writeFile,
    mkdir,
    run,
    async remove(p) {
      const target = real(p);
      await insideRoot(target);
      await fs.rm(target, { force: true, recursive: true });
      facts.clear();
    },
    async chmod(p, mode) {
      await fs.chmod(real(p), mode);
      facts.clear();
    },
    async chown(p, to) {
      const { uid, gid } = await ids(p, to);
      await fs.lchown(real(p), uid, gid);
      facts.clear();
    },
    async symlink(target, p) {
      const link = real(p);
      await insideRoot(link);
      const temp = path.join(path.dirname(link), `.${path.basename(link)}.meshvm-new`);
      await fs.rm(temp, { force: true });
      await fs.symlink(target, temp);
      await fs.rename(temp, link);
      facts.clear();
    },
  };
}

/** Streams an https response to a file, returning the sha256 of what arrived. */
async function fetchToFile(url: string, file: string, opts: { ca: string | undefined; timeoutMs: number }): Promise<string> {
  const { request } = await import('node:https');
  const { createHash } = await import('node:crypto');
  const { createWriteStream } = await import('node:fs');
  const { pipeline } = await import('node:stream/promises');
  if (!url.startsWith('https://')) throw new Error(`refusing to download ${url}: only https URLs are allowed`);
  const response = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    const req = request(url, { ca: opts.ca, timeout: opts.timeoutMs }, resolve);
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${opts.timeoutMs / 1000} s`)));
    req.on('error', reject);
    req.end();
  });
  if (response.statusCode !== 200) {
    response.resume();
    throw new Error(`downloading ${url} failed: HTTP ${response.statusCode}`);
  }
  const hash = createHash('sha256');
  response.on('data', (chunk: Buffer) => hash.update(chunk));
  await pipeline(response, createWriteStream(file, { mode: 0o644, flags: 'wx' }));
  return hash.digest('hex');
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function nameOfId<T extends { name: string }>(entries: Map<string, T>, id: number, idOf: (e: T) => number): string {
  for (const entry of entries.values()) if (idOf(entry) === id) return entry.name;
  return String(id);
}

function idOf<T>(entries: Map<string, T>, name: string, id: (e: T) => number, what: string, p: string): number {
  const entry = entries.get(name);
  if (entry) return id(entry);
  if (/^\d+$/.test(name)) return Number(name);
  throw new Error(`cannot set ${what} of ${p}: no ${what} "${name}" in the root's /etc/${what === 'user' ? 'passwd' : 'group'}`);
}
