// Benchmark recipe: N files in one directory, declared by a loop as a real recipe would.
import { defineRecipe, Directory, File, z } from 'meshvm';

export default defineRecipe({
  name: 'many-files',
  attributes: z.strictObject({ count: z.number().int().min(1), dir: z.string().default('/srv/files') }),
  declare: ({ count, dir }) => [
    Directory({ path: dir, mode: 0o755 }),
    ...Array.from({ length: count }, (_, i) =>
      File({ path: `${dir}/f${String(i).padStart(4, '0')}.conf`, content: `key=${i}\nvalue=${'x'.repeat(40)}\n`, mode: 0o644, owner: 'root', group: 'root' }),
    ),
  ],
});
