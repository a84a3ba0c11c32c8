// Recipe cluster-env: /var/lib/istio/envoy/cluster.env, what the sidecar knows of the cluster it joins.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { cidr } from '../engine/validate.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { renderEnvFile } from './env-file.ts';

export const ENVOY_DIR = '/var/lib/istio/envoy';

export const clusterEnv = defineRecipe({
  name: 'cluster-env',
  description: 'cluster.env: ISTIO_SERVICE_CIDR, ISTIO_SYSTEM_NAMESPACE, ISTIO_CP_AUTH (setupMeshEx.sh generateClusterEnv).',
  attributes: z.strictObject({
    serviceCidr: cidr,
    systemNamespace: z.string().default('istio-system'),
    controlPlaneAuth: z.enum(['MUTUAL_TLS', 'NONE']).default('MUTUAL_TLS'),
    /** Further KEY: value lines, written after the standard ones in key order. */
    extra: z.record(z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'expected an environment variable name'), z.string()).default({}),
    proxyUser: z.string().default('istio-proxy'),
  }),
  declare: (a) => [
    Directory({ path: ENVOY_DIR, mode: 0o755, owner: a.proxyUser, group: a.proxyUser }),
    File({
      path: `${ENVOY_DIR}/cluster.env`,
      mode: 0o644,
      owner: a.proxyUser,
      group: a.proxyUser,
      content: renderEnvFile({
        ISTIO_SERVICE_CIDR: a.serviceCidr,
        ISTIO_SYSTEM_NAMESPACE: a.systemNamespace,
        ISTIO_CP_AUTH: a.controlPlaneAuth,
        ...Object.fromEntries(Object.entries(a.extra).sort(([x], [y]) => x.localeCompare(y))),
      }),
    }),
  ],
});
