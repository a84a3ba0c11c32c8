// Recipe files: directories, files and managed blocks written straight from the runlist's attributes.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { Directory, directorySpec } from '../resources/directory.ts';
import { File, fileSpec } from '../resources/file.ts';
import { ManagedBlock, managedBlockSpec } from '../resources/managed-block.ts';

export const files = defineRecipe({
  name: 'files',
  description: 'Directories, files and managed blocks given literally in the runlist (in that order).',
  attributes: z.strictObject({
    directories: z.array(directorySpec).default([]),
    files: z.array(fileSpec).default([]),
    blocks: z.array(managedBlockSpec).default([]),
  }),
  declare: (a) => [...a.directories.map((d) => Directory(d)), ...a.files.map((f) => File(f)), ...a.blocks.map((b) => ManagedBlock(b))],
});
