// localHost: the Host for this machine, every guest path under a root; composes engine/host/ (paths, reads, the safe walk of writes, commands, downloads).
import path from 'node:path';
import type { Host } from './host.ts';
import { downloadTo, hashDownload } from './host/download.ts';
import { runCommand } from './host/exec.ts';
import { factCache } from './host/facts.ts';
import { rootOwners } from './host/owners.ts';
import { guestReads } from './host/read.ts';
import { rootPaths } from './host/root-paths.ts';
import { safeRoot } from './host/safe-path.ts';
import { chmodPath, chownPath, makeDirectory, removePath, replaceSymlink, writeFileAtomic } from './host/write.ts';

export interface LocalHostOptions {
  /** The directory guest paths are mapped under (default '/': this machine, live). */
  root?: string;
  /** The network namespace commands run in (`ip netns exec`). */
  netns?: string;
  /** Receives the full argv of every command run (for verbose output). */
  onCommand?: (argv: readonly string[]) => void;
}

export function localHost(options: LocalHostOptions = {}): Host {
  const root = path.resolve(options.root ?? '/');
  const netns = options.netns;
  const facts = factCache();
  const paths = rootPaths(root);
  const safe = safeRoot(root);
  const reads = guestReads(safe);
  const readFile = (p: string) => reads.readText(p);
  const owners = rootOwners(readFile, facts.memo);
  const place = { safe, owners };
  const commands = { paths, netns, onCommand: options.onCommand };

  /** Every fact, and every directory held open for reads, forgotten: after anything changed the machine. */
  const forget = () => {
    facts.forget();
    reads.forget();
  };

  /** Runs something that changes the machine; every fact is forgotten afterwards, even when it failed half-way. */
  async function changing<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } finally {
      forget();
    }
  }

  return {
    root,
    // the one place that decides live system vs offline root
    live: root === '/',
    netns,
    realPath: paths.real,
    readFile,
    stat: (p) => reads.stat(owners, p),
    readLink: (p) => reads.readLink(p),
    listDir: (p) => reads.listDir(p),
    accounts: owners.accounts,
    memo: facts.memo,
    query: (argv, opts = {}) => runCommand(commands, argv, { ...opts, allowFailure: true }),
    run: (argv, opts = {}) => {
      forget();
      return changing(() => runCommand(commands, argv, opts));
    },
    writeFile: (p, content, opts) => changing(() => writeFileAtomic(place, p, content, opts)),
    mkdir: (p, opts) => changing(() => makeDirectory(place, p, opts)),
    remove: (p) => changing(() => removePath(safe, p)),
    chmod: (p, mode) => changing(() => chmodPath(place, p, mode)),
    chown: (p, to) => changing(() => chownPath(place, p, to)),
    symlink: (target, p) => changing(() => replaceSymlink(safe, target, p)),
    download: (url, p, opts) => changing(() => downloadTo({ read: readFile, safe }, url, p, opts)),
    hashDownload: (url, opts) => hashDownload(readFile, url, opts),
  };
}
