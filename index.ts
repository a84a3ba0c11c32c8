// meshvm's public API, for recipe modules written outside the package: `import { defineRecipe, File } from 'meshvm'`.
export { defineRecipe, include, type Recipe, type RecipeContext, type Declaration } from './engine/recipe.ts';
export { defineResource, compareFields, hasChanges, type ResourceType, type Declared, type Changes, type Notifiable, type DeclareOptions } from './engine/resource.ts';
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
export { builtins } from './recipes/index.ts';
