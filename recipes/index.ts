// The built-in recipes: the names a runlist may use.
import type { Recipe } from '../engine/recipe.ts';
import { aws } from './aws.ts';
import { certs } from './certs.ts';
import { clusterEnv } from './cluster-env.ts';
import { convergeTimer } from './converge-timer.ts';
import { dns } from './dns.ts';
import { files } from './files.ts';
import { interception } from './interception.ts';
import { istioProxyUser } from './istio-proxy-user.ts';
import { registration } from './registration.ts';
import { sidecar } from './sidecar.ts';
import { sidecarServices } from './sidecar-services.ts';

export const builtins: ReadonlyMap<string, Recipe> = new Map<string, Recipe>(
  [files, istioProxyUser, dns, clusterEnv, sidecar, certs, sidecarServices, aws, convergeTimer, interception, registration].map((recipe) => [
    recipe.name,
    recipe as unknown as Recipe,
  ]),
);
