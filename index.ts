// meshvm's public API, for recipe modules written outside the package: `import { defineRecipe, File } from 'meshvm'`.
export { defineRecipe, include, type Recipe, type RecipeContext, type Declaration } from './engine/recipe.ts';
export {
  defineResource,
  compareFields,
  hasChanges,
  type ResourceType,
  type Declared,
  type Changes,
  type Notifiable,
  type DeclareOptions,
  type Action,
  type Applied,
  type Requirement,
  type Provision,
  type PrepareContext,
  type Expiry,
} from './engine/resource.ts';
export type { Check, CheckContext } from './engine/check.ts';
export type { Host, HostReader, CommandResult, FileStat } from './engine/host.ts';
export { formatMode } from './engine/host.ts';
export { localHost } from './engine/host-local.ts';
export { InputError, CommandError, ResourceError } from './engine/errors.ts';
export * as schema from './engine/validate.ts';
export { z } from 'zod';
export { File } from './resources/file.ts';
export { Directory } from './resources/directory.ts';
export { ManagedBlock } from './resources/managed-block.ts';
export { User, Group } from './resources/accounts.ts';
export { Package } from './resources/package.ts';
export { Service } from './resources/service.ts';
export { SystemdUnit } from './resources/systemd-unit.ts';
export { DnsmasqConfig } from './resources/dnsmasq-config.ts';
export { ResolvConf } from './resources/resolv-conf/index.ts';
export { Execute } from './resources/execute.ts';
export { Symlink } from './resources/symlink.ts';
export { IstioToken } from './resources/istio-token.ts';
export { WorkloadGroup } from './resources/workload-group.ts';
export { WorkloadEntry, KubeService } from './resources/workload-entry.ts';
export { SidecarObject } from './resources/sidecar-object.ts';
export { ContainerImage } from './resources/container-image.ts';
export { Iptables } from './resources/iptables/index.ts';
export { Route53Records } from './resources/route53-record.ts';
