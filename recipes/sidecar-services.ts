// Recipe sidecar-services: istio (and the classic node agent) enabled and running, restarted once when an input changed.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { Service } from '../resources/service.ts';
import { flow, sidecarServiceSpecs } from './mesh.ts';
import { servicesChecks } from './checks/services.ts';

export const sidecarServices = defineRecipe({
  name: 'sidecar-services',
  description: 'The sidecar units enabled and running; the other recipes notify them when cluster.env, sidecar.env, certs or the token change.',
  attributes: z.strictObject({ flow }),
  checks: servicesChecks,
  declare: (a) => sidecarServiceSpecs(a.flow).map((spec) => Service(spec)),
});
