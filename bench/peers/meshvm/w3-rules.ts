// W3: N iptables rules in one chain (nat/MESHVM_W3, jumped to first from OUTPUT for TCP), as bench/iptables.ts declares them.
import { defineRecipe, Iptables, z } from 'meshvm';

/** Rule i; the Ansible playbook and the Puppet manifest compute the same one. */
export const w3Rule = (i: number) => `-p tcp -d 10.${i >> 8}.${i & 255}.1 --dport ${10000 + i} -j REDIRECT --to-ports 15001`;

export default defineRecipe({
  name: 'peers-w3-rules',
  attributes: z.strictObject({ count: z.number().int().min(1).max(50000) }),
  declare: ({ count }) => [
    Iptables({
      table: 'nat',
      chain: 'MESHVM_W3',
      rules: Array.from({ length: count }, (_, i) => w3Rule(i)),
      from: { chain: 'OUTPUT', position: 'first', match: '-p tcp' },
    }),
  ],
});
