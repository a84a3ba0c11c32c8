// Scratch roots built as each resolver owner leaves a host (the fixtures of test/fixtures/resolver), for the ResolvConf tests.
import type { ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PROJECT, scratchRoot, seed } from './scratch.ts';

const FIXTURES = path.join(PROJECT, 'test/fixtures/resolver');
export const fixture = (name: string) => fs.readFile(path.join(FIXTURES, name), 'utf8');

/** Scratch roots as each resolver owner leaves a host: files from the fixtures, symlinks as the packages make them. */
export const HOSTS: Record<string, { files: Record<string, string>; links?: Record<string, string> }> = {
  resolved: {
    files: {
      '/run/systemd/resolve/stub-resolv.conf': 'stub-resolv.conf',
      '/run/systemd/resolve/resolv.conf': 'uplink-resolv.conf',
      '/usr/lib/systemd/system/systemd-resolved.service': '',
    },
    links: { '/etc/resolv.conf': '../run/systemd/resolve/stub-resolv.conf' },
  },
  'resolved-uplink': {
    files: { '/run/systemd/resolve/resolv.conf': 'uplink-resolv.conf', '/usr/lib/systemd/system/systemd-resolved.service': '' },
    links: { '/etc/resolv.conf': '/run/systemd/resolve/resolv.conf' },
  },
  dhclient: {
    files: { '/etc/resolv.conf': 'dhclient-resolv.conf', '/etc/dhcp/dhclient.conf': '', '/var/lib/dhcp/dhclient.eth0.leases': 'dhclient.eth0.leases' },
  },
  'dhclient-leases-only': { files: { '/etc/resolv.conf': 'dhclient-resolv.conf', '/var/lib/dhcp/dhclient.eth0.leases': 'dhclient.eth0.leases' } },
  plain: { files: { '/etc/resolv.conf': 'plain-resolv.conf' } },
  missing: { files: { '/etc/hostname': '' } },
  resolvconf: {
    files: {
      '/run/resolvconf/resolv.conf': 'resolvconf-resolv.conf',
      '/etc/resolvconf/resolv.conf.d/head': 'resolvconf-head',
      '/etc/resolvconf/resolv.conf.d/base': '',
      '/etc/dhcp/dhclient.conf': '',
    },
    links: { '/etc/resolv.conf': '../run/resolvconf/resolv.conf' },
  },
  'network-manager': { files: { '/etc/resolv.conf': 'networkmanager-resolv.conf', '/etc/NetworkManager/NetworkManager.conf': 'NetworkManager.conf' } },
  'network-manager-symlink': {
    files: { '/run/NetworkManager/resolv.conf': 'networkmanager-resolv.conf', '/etc/NetworkManager/NetworkManager.conf': 'NetworkManager.conf' },
    links: { '/etc/resolv.conf': '/run/NetworkManager/resolv.conf' },
  },
  'network-manager-dnsmasq': {
    files: {
      '/etc/resolv.conf': 'networkmanager-resolv.conf',
      '/etc/NetworkManager/NetworkManager.conf': 'NetworkManager.conf',
      '/etc/NetworkManager/conf.d/00-use-dnsmasq.conf': 'NetworkManager-dnsmasq.conf',
    },
  },
  dhcpcd: { files: { '/etc/resolv.conf': 'dhcpcd-resolv.conf', '/etc/dhcpcd.conf': '' } },
  openresolv: { files: { '/etc/resolv.conf': 'openresolv-resolv.conf', '/etc/resolvconf.conf': '' } },
  netconfig: { files: { '/etc/resolv.conf': 'netconfig-resolv.conf' } },
  'unknown-symlink': { files: { '/mnt/wsl/resolv.conf': 'plain-resolv.conf' }, links: { '/etc/resolv.conf': '/mnt/wsl/resolv.conf' } },
};

export async function hostRoot(t: ExecutionContext, kind: string): Promise<string> {
  const root = await scratchRoot(t);
  const spec = HOSTS[kind]!;
  const files: Record<string, string> = {};
  for (const [file, name] of Object.entries(spec.files)) files[file] = name ? await fixture(name) : '';
  await seed(root, files);
  for (const [link, target] of Object.entries(spec.links ?? {})) {
    await fs.mkdir(path.dirname(path.join(root, link)), { recursive: true });
    await fs.symlink(target, path.join(root, link));
  }
  return root;
}
