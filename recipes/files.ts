// Recipe files: directories, files and managed blocks written straight from the runlist's attributes.
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { Directory, directorySpec } from '../resources/directory.ts';
import { File, fileSpec } from '../resources/file.ts';
import { ManagedBlock, managedBlockSpec } from '../resources/managed-block.ts';
import { removeOwnFiles } from './undo.ts';

export const files = defineRecipe({
  name: 'files',
  description: 'Directories, files and managed blocks given literally in the runlist (in that order).',
  attributes: z.strictObject({
    directories: z.array(directorySpec).default([]),
    files: z.array(fileSpec).default([]),
    blocks: z.array(managedBlockSpec).default([]),
  }),
  declare: (a) => [...a.directories.map((d) => Directory(d)), ...a.files.map((f) => File(f)), ...a.blocks.map((b) => ManagedBlock(b))],
  /**
   * The blocks (between meshvm's markers), the files that hold the content the runlist gives them (or meshvm's record or
   * marker), and with --purge the directories, last first, when empty.
   */
  undo: async (a, ctx) => [
    ...a.blocks.map((b) => ManagedBlock({ ...b, ensure: 'absent' })),
    ...(await removeOwnFiles(
      ctx,
      a.files.filter((f) => f.ensure === 'present').map((f) => ({ path: f.path, content: f.content })),
    )),
    ...(ctx.purge ? [...a.directories].reverse().map((d) => Directory({ path: d.path, ensure: 'absent' })) : []),
  ],
});
