// The built-in recipes: the names a runlist may use.
import type { Recipe } from '../engine/recipe.ts';
import { certs } from './certs.ts';
import { clusterEnv } from './cluster-env.ts';
import { dns } from './dns.ts';
import { files } from './files.ts';
import { istioProxyUser } from './istio-proxy-user.ts';
import { sidecarEnv } from './sidecar-env.ts';

export const builtins: ReadonlyMap<string, Recipe> = new Map<string, Recipe>(
  [files, istioProxyUser, clusterEnv, sidecarEnv, dns, certs].map((recipe) => [recipe.name, recipe as unknown as Recipe]),
);
