// Recipe sidecar: the istio-sidecar package (a .deb by URL and sha256, or apt) and /var/lib/istio/envoy/sidecar.env.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { port, unique } from '../engine/validate.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';
import { Package, packageSpec } from '../resources/package.ts';
import { ENVOY_DIR } from './cluster-env.ts';
import { renderEnvFile } from './env-file.ts';
import { flow, proxyUser, sidecarRestart } from './mesh.ts';

const sidecarPackage = z.discriminatedUnion('from', [
  z.strictObject({ from: z.literal('apt'), name: z.string().default('istio-sidecar'), version: z.string().optional() }),
  z.strictObject({ from: z.literal('deb'), name: z.string().default('istio-sidecar'), url: z.string(), sha256: z.string(), caFile: z.string().optional() }),
  /** Installed some other way (an image, or a scratch root in the demo). */
  z.strictObject({ from: z.literal('none') }),
]);

export const sidecar = defineRecipe({
  name: 'sidecar',
  description: 'The istio-sidecar package and sidecar.env (ISTIO_INBOUND_PORTS and the exclusions), owned by istio-proxy.',
  attributes: z.strictObject({
    flow,
    package: sidecarPackage.default({ from: 'apt', name: 'istio-sidecar' }),
    inboundPorts: unique(port).min(1),
    excludeInboundPorts: unique(port).default([]),
    /** REDIRECT (default) or TPROXY. */
    interceptionMode: z.enum(['REDIRECT', 'TPROXY']).optional(),
    proxyUser,
  }),
  declare(a, ctx) {
    const pkg = a.package;
    return [
      pkg.from === 'apt' && Package(packageSpec.parse({ name: pkg.name, ...(pkg.version && { version: pkg.version }) })),
      pkg.from === 'deb' && Package({ name: pkg.name, deb: { url: pkg.url, sha256: pkg.sha256, ...(pkg.caFile && { caFile: pkg.caFile }) } }),
      Directory({ path: ENVOY_DIR, mode: 0o755, owner: a.proxyUser, group: a.proxyUser }),
      File(
        {
          path: `${ENVOY_DIR}/sidecar.env`,
          mode: 0o644,
          owner: a.proxyUser,
          group: a.proxyUser,
          content: renderEnvFile({
            ISTIO_INBOUND_PORTS: a.inboundPorts.join(','),
            ISTIO_INBOUND_EXCLUDE_PORTS: a.excludeInboundPorts.length ? a.excludeInboundPorts.join(',') : undefined,
            ISTIO_INBOUND_INTERCEPTION_MODE: a.interceptionMode,
          }),
        },
        sidecarRestart(ctx, a.flow),
      ),
    ];
  },
});
