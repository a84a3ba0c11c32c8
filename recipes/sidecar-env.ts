// Recipe sidecar-env: /var/lib/istio/envoy/sidecar.env, which ports the sidecar intercepts.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { port, unique } from '../engine/validate.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { ENVOY_DIR } from './cluster-env.ts';
import { renderEnvFile } from './env-file.ts';

export const sidecarEnv = defineRecipe({
  name: 'sidecar-env',
  description: 'sidecar.env: ISTIO_INBOUND_PORTS and the exclusions.',
  attributes: z.strictObject({
    inboundPorts: unique(port).min(1),
    excludeInboundPorts: unique(port).default([]),
    proxyUser: z.string().default('istio-proxy'),
  }),
  declare: (a) => [
    Directory({ path: ENVOY_DIR, mode: 0o755, owner: a.proxyUser, group: a.proxyUser }),
    File({
      path: `${ENVOY_DIR}/sidecar.env`,
      mode: 0o644,
      owner: a.proxyUser,
      group: a.proxyUser,
      content: renderEnvFile({
        ISTIO_INBOUND_PORTS: a.inboundPorts.join(','),
        ISTIO_INBOUND_EXCLUDE_PORTS: a.excludeInboundPorts.length ? a.excludeInboundPorts.join(',') : undefined,
      }),
    }),
  ],
});
