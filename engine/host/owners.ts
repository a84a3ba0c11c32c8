// The root's users and groups: read once from its /etc/passwd and /etc/group, names turned into ids and back.
import type { Accounts } from '../host.ts';
import { parseGroup, parsePasswd } from '../accounts.ts';

export interface Owners {
  accounts(): Promise<Accounts>;
  /** The uid and gid to set on a path (-1: leave as is); an unknown name is an error naming the path. */
  ids(p: string, to: { owner?: string | undefined; group?: string | undefined }): Promise<{ uid: number; gid: number }>;
  /** The names of a uid and gid, or the numbers when the root does not know them. */
  names(uid: number, gid: number): Promise<{ owner: string; group: string }>;
}

export function rootOwners(readFile: (p: string) => Promise<string | undefined>, memo: <T>(key: string, compute: () => Promise<T>) => Promise<T>): Owners {
  const accounts = () =>
    memo('accounts', async (): Promise<Accounts> => {
      const users = parsePasswd((await readFile('/etc/passwd')) ?? '');
      const groups = parseGroup((await readFile('/etc/group')) ?? '');
      // root is uid 0 on every system, even in a scratch root whose /etc/passwd does not list it
      if (!users.has('root')) users.set('root', { name: 'root', uid: 0, gid: 0, comment: '', home: '/root', shell: '/bin/sh' });
      if (!groups.has('root')) groups.set('root', { name: 'root', gid: 0, members: [] });
      return { users, groups };
    });

  return {
    accounts,
    async ids(p, to) {
      const { users, groups } = await accounts();
      const uid = to.owner === undefined ? -1 : idOf(users, to.owner, (a) => a.uid, 'user', p);
      const gid = to.group === undefined ? -1 : idOf(groups, to.group, (g) => g.gid, 'group', p);
      return { uid, gid };
    },
    async names(uid, gid) {
      const { users, groups } = await accounts();
      return { owner: nameOfId(users, uid, (a) => a.uid), group: nameOfId(groups, gid, (g) => g.gid) };
    },
  };
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
