// Recipe istio-proxy-user: the istio-proxy system account and group the sidecar runs as.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { Group, User } from '../resources/accounts.ts';
import { Directory } from '../resources/directory.ts';

export const istioProxyUser = defineRecipe({
  name: 'istio-proxy-user',
  description: 'The istio-proxy system user and group (as the istio-sidecar package creates them).',
  attributes: z.strictObject({
    proxyUser: z.string().default('istio-proxy'),
    home: z.string().default('/var/lib/istio'),
  }),
  declare: ({ proxyUser, home }) => [
    Group({ name: proxyUser, system: true }),
    User({ name: proxyUser, group: proxyUser, system: true, home, shell: '/bin/false', comment: 'Istio sidecar proxy' }),
  ],
  /** With --purge only (a later join reuses the account, and files it owns keep its uid): the user, its group, its home if empty. */
  undo: ({ proxyUser, home }, ctx) =>
    ctx.purge ? [User({ name: proxyUser, ensure: 'absent' }), Group({ name: proxyUser, ensure: 'absent' }), Directory({ path: home, ensure: 'absent' })] : [],
});
