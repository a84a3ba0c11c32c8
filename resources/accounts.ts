// User and Group: system accounts (istio-proxy) through useradd/groupadd, under --root with their --prefix option.
import { z } from 'zod';
import { compareFields, defineResource, type Changes } from '../engine/resource.ts';
import { accountName, guestPath } from '../engine/validate.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { describePresence } from './fields.ts';

const name = z
  .string()
  .regex(/^[a-z_][a-z0-9_-]*\$?$/, 'expected a name of lower case letters, digits, "_" or "-", starting with a letter or "_"')
  .max(32);

export const groupSpec = z.strictObject({
  name,
  gid: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .optional(),
  system: z.boolean().default(true),
  /** absent: deleted (groupdel); a group that is still some user's primary group cannot be, and groupdel says so. */
  ensure: z.enum(['present', 'absent']).default('present'),
});
export type GroupSpec = z.output<typeof groupSpec>;
export interface GroupState {
  ensure: 'present' | 'absent';
  gid: number;
}

export const userSpec = z.strictObject({
  name,
  uid: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .optional(),
  /** Primary group; by default a group of the user's own name (created if missing). */
  group: accountName.optional(),
  /** Supplementary groups, which must exist. */
  groups: z.array(accountName).optional(),
  home: guestPath.optional(),
  shell: guestPath.optional(),
  comment: z
    .string()
    .regex(/^[^:\n]*$/, 'must not contain ":" or a newline')
    .optional(),
  system: z.boolean().default(true),
  createHome: z.boolean().default(false),
  /** absent: deleted (userdel, its home left in place). */
  ensure: z.enum(['present', 'absent']).default('present'),
});
export type UserSpec = z.output<typeof userSpec>;
export interface UserState {
  ensure: 'present' | 'absent';
  uid: number;
  group: string;
  groups: string[];
  home: string;
  shell: string;
  comment: string;
}

/** useradd/groupadd edit the files under --prefix without a chroot; they need the four files to exist there. */
async function prefixArgs(host: Host): Promise<string[]> {
  if (host.live) return [];
  if (!(await host.stat('/etc'))) await host.mkdir('/etc', { mode: 0o755 });
  for (const [file, mode] of [
    ['/etc/passwd', 0o644],
    ['/etc/group', 0o644],
    ['/etc/shadow', 0o640],
    ['/etc/gshadow', 0o640],
  ] as const) {
    if (!(await host.stat(file))) await host.writeFile(file, '', { mode, backup: false });
  }
  return ['--prefix', host.root];
}

export const groupType = {
  kind: 'group',
  schema: groupSpec,
  key: (spec: GroupSpec) => spec.name,
  provides: (spec: GroupSpec) => (spec.ensure === 'absent' ? [] : [{ account: 'group' as const, name: spec.name }]),
  describe: describePresence,

  async current(host: HostReader, spec: GroupSpec): Promise<GroupState | undefined> {
    const group = (await host.accounts()).groups.get(spec.name);
    return group && { ensure: 'present', gid: group.gid };
  },

  changes(spec: GroupSpec, current: GroupState | undefined): Changes<GroupState> {
    if (spec.ensure === 'absent') return current ? { ensure: { from: 'present', to: 'absent' } } : {};
    const changes = compareFields(spec, current, ['gid']);
    return current ? changes : { ensure: { from: 'absent', to: 'present' }, ...changes };
  },

  async apply(host: Host, spec: GroupSpec, _changes: Changes<GroupState>, current: GroupState | undefined): Promise<void> {
    const prefix = await prefixArgs(host);
    if (spec.ensure === 'absent') return void (await host.run(['groupdel', ...prefix, spec.name]));
    const gid = spec.gid === undefined ? [] : ['--gid', String(spec.gid)];
    if (current) await host.run(['groupmod', ...prefix, ...gid, spec.name]);
    else await host.run(['groupadd', ...prefix, ...(spec.system ? ['--system'] : []), ...gid, spec.name]);
  },
};

export const userType = {
  kind: 'user',
  schema: userSpec,
  key: (spec: UserSpec) => spec.name,
  provides: (spec: UserSpec) =>
    spec.ensure === 'absent'
      ? []
      : [
          { account: 'user' as const, name: spec.name },
          { account: 'group' as const, name: spec.group ?? spec.name },
        ],
  describe: describePresence,

  async current(host: HostReader, spec: UserSpec): Promise<UserState | undefined> {
    const { users, groups } = await host.accounts();
    const user = users.get(spec.name);
    if (!user) return undefined;
    const primary = [...groups.values()].find((g) => g.gid === user.gid)?.name ?? String(user.gid);
    const supplementary = [...groups.values()]
      .filter((g) => g.members.includes(spec.name))
      .map((g) => g.name)
      .sort();
    return { ensure: 'present', uid: user.uid, group: primary, groups: supplementary, home: user.home, shell: user.shell, comment: user.comment };
  },

  changes(spec: UserSpec, current: UserState | undefined): Changes<UserState> {
    if (spec.ensure === 'absent') return current ? { ensure: { from: 'present', to: 'absent' } } : {};
    const wanted = { ...spec, groups: spec.groups && [...spec.groups].sort() };
    const changes = compareFields(wanted, current, ['uid', 'group', 'groups', 'home', 'shell', 'comment']);
    return current ? changes : { ensure: { from: 'absent', to: 'present' }, ...changes };
  },

  async apply(host: Host, spec: UserSpec, changes: Changes<UserState>, current: UserState | undefined): Promise<void> {
    const prefix = await prefixArgs(host);
    if (spec.ensure === 'absent') return void (await host.run(['userdel', ...prefix, spec.name]));
    const args: string[] = [];
    if (changes.uid && spec.uid !== undefined) args.push('-u', String(spec.uid));
    if (changes.home) args.push('-d', spec.home!);
    if (changes.shell) args.push('-s', spec.shell!);
    if (changes.comment) args.push('-c', spec.comment!);
    if (changes.groups) args.push('-G', spec.groups!.join(','));
    if (current) {
      if (changes.group) args.push('-g', spec.group!);
      await host.run(['usermod', ...prefix, ...args, spec.name]);
      return;
    }
    const { groups } = await host.accounts();
    const primary = spec.group ?? (groups.has(spec.name) ? spec.name : undefined);
    await host.run([
      'useradd',
      ...prefix,
      ...(spec.system ? ['--system'] : []),
      ...(primary ? ['--gid', primary] : ['--user-group']),
      spec.createHome ? '--create-home' : '--no-create-home',
      ...args,
      spec.name,
    ]);
  },
};

export const Group = defineResource(groupType);
export const User = defineResource(userType);
