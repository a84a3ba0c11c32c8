// The one door to the machine: what resources may read (HostReader) and change (Host).
import type { DownloadOptions, Fetched } from './host/download.ts';

export type { DownloadOptions, Fetched };

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface CommandOptions {
  /** Written to the command's stdin (use it for secrets: never put them in argv). */
  input?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  /** Return a non-zero exit as a result instead of throwing CommandError. */
  allowFailure?: boolean;
  /**
   * Where the command runs. 'host' (the default): on this machine, for meshvm's own root-aware helpers (systemctl --root,
   * useradd --prefix, a checker given a staged file's real path). 'root': inside the root, as the machine being built
   * would run it: under a root other than '/' confined to it (unshare --root, a chroot) and refused when the root has no
   * such program; on '/' the same as 'host'. Commands a user wrote (Execute, guards, verify commands) run in 'root'
   * unless their spec says they run on the host.
   */
  in?: 'host' | 'root';
  /** The working directory, a guest path (with in: 'root', a path inside the root). */
  cwd?: string;
}

export interface FileStat {
  type: 'file' | 'directory' | 'symlink' | 'other';
  /** Permission bits including setuid/setgid/sticky (0o7777). */
  mode: number;
  /** Account name, or the numeric id when the root's /etc/passwd does not know it. */
  owner: string;
  group: string;
  uid: number;
  gid: number;
  size: number;
}

export interface Account {
  name: string;
  uid: number;
  gid: number;
  comment: string;
  home: string;
  shell: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export interface Accounts {
  users: Map<string, Account>;
  groups: Map<string, GroupEntry>;
}

export interface HostReader {
  /** The directory every guest path is mapped under ('/' on a real machine). */
  readonly root: string;
  /**
   * The running system (root '/'): services can be started and packages installed. Not live: an offline root (an image
   * being built, a scratch directory), where only files and enablement change. Decided once, by localHost.
   */
  readonly live: boolean;
  /** The network namespace commands run in, if any. */
  readonly netns: string | undefined;
  /** Where a guest path lives on this machine (for tools given a path). */
  realPath(guestPath: string): string;
  readFile(path: string): Promise<string | undefined>;
  /** lstat: a symlink is reported as one, not followed. */
  stat(path: string): Promise<FileStat | undefined>;
  readLink(path: string): Promise<string | undefined>;
  listDir(path: string): Promise<string[] | undefined>;
  /** Runs a command that changes nothing (allowed in plan). A non-zero exit is a result; a command that cannot start or times out throws. */
  query(argv: readonly string[], opts?: Omit<CommandOptions, 'allowFailure'>): Promise<CommandResult>;
  /** Users and groups from the root's /etc/passwd and /etc/group. */
  accounts(): Promise<Accounts>;
  /** A fact computed once per run and shared by resources (e.g. one iptables-save); forgotten after any change. */
  memo<T>(key: string, compute: () => Promise<T>): Promise<T>;
}

export interface WriteOptions {
  mode?: number;
  owner?: string;
  group?: string;
  /** Runs on the staged file (its real path) before it replaces the live one; throw to refuse it. */
  verify?: (stagedPath: string) => Promise<void>;
  /** Keep the replaced file under /var/lib/meshvm/backup (default true). */
  backup?: boolean;
  /** The content is a secret: no backup of the replaced file is kept, and those kept before are removed. */
  sensitive?: boolean;
}

export interface MkdirOptions {
  mode?: number;
  owner?: string;
  group?: string;
  parents?: boolean;
}

export interface Host extends HostReader {
  /**
   * Every change below reaches its path by one safe walk (engine/host/safe-path.ts): links followed inside the root,
   * and only in directories root owns; a link an unprivileged account controls is refused, naming the path.
   * writeFile is atomic: a temp file beside the target (0600, its owner, the content, fsync, its mode), then rename.
   */
  writeFile(path: string, content: string, opts?: WriteOptions): Promise<void>;
  mkdir(path: string, opts?: MkdirOptions): Promise<void>;
  remove(path: string): Promise<void>;
  /** fchmod on the file or directory itself, opened without following a link (a link there is refused). */
  chmod(path: string, mode: number): Promise<void>;
  /** fchown on the file or directory itself, as chmod. */
  chown(path: string, to: { owner?: string | undefined; group?: string | undefined }): Promise<void>;
  symlink(target: string, path: string): Promise<void>;
  /** Fetches an https URL to a file atomically; refused (nothing written) when its sha256 differs. */
  download(url: string, path: string, opts: DownloadOptions): Promise<Fetched>;
  /** Streams an https URL through sha256 and keeps nothing (plan's preflight); refused as download is when it differs. */
  hashDownload(url: string, opts: DownloadOptions): Promise<Fetched>;
  /** Runs a command that may change the machine. Throws CommandError on a non-zero exit unless allowFailure. */
  run(argv: readonly string[], opts?: CommandOptions): Promise<CommandResult>;
}

/** Renders a mode the way people read it: 0644, 2755. */
export function formatMode(mode: number): string {
  return '0' + (mode & 0o7777).toString(8).padStart(3, '0');
}
