// include(): a recipe made of another gets its declarations, planned through a runlist; bad attributes for the included
// recipe are an InputError naming that recipe and the attribute path.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { InputError } from '../../engine/errors.ts';
import { localHost } from '../../engine/host-local.ts';
import { planRunlist } from '../../engine/plan.ts';
import { defineRecipe, include, type Recipe, type RecipeContext } from '../../engine/recipe.ts';
import type { Declared } from '../../engine/resource.ts';
import { loadRunlist } from '../../engine/runlist.ts';
import { fileMode, guestPath } from '../../engine/validate.ts';
import { Directory } from '../../resources/directory.ts';
import { File } from '../../resources/file.ts';
import { convergesOnce, PROJECT, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

/** What the included recipe saw on its last call, to check that include passes the caller's context on. */
const seen: { contexts: RecipeContext[]; declared: number } = { contexts: [], declared: 0 };

const motd = defineRecipe({
  name: 'motd',
  attributes: z.strictObject({
    text: z.string(),
    file: z.strictObject({ path: guestPath.default('/etc/motd'), mode: fileMode.default(0o644) }).default({ path: '/etc/motd', mode: 0o644 }),
  }),
  declare: (a, ctx) => {
    seen.contexts.push(ctx);
    seen.declared++;
    return [Directory({ path: '/etc', mode: 0o755 }), File({ path: a.file.path, content: `${a.text}\n`, mode: a.file.mode })];
  },
});

/** Names the machine and greets with its name: the greeting is the motd recipe, called with attributes this one computes. */
const site = defineRecipe({
  name: 'site',
  attributes: z.strictObject({
    name: z.string(),
    /** Passed on to motd as they are: motd's schema, not this one, decides what is valid. */
    motd: z.record(z.string(), z.unknown()).default({}),
  }),
  declare: async (a, ctx) => [
    await include(motd, { text: `welcome to ${a.name}`, ...a.motd }, ctx),
    File({ path: '/etc/hostname', content: `${a.name}\n`, mode: 0o644 }),
  ],
});

const builtins = new Map<string, Recipe>([
  [motd.name, motd as unknown as Recipe],
  [site.name, site as unknown as Recipe],
]);

/** Loads a runlist of the recipes above from YAML and plans it against a scratch root, as `meshvm plan` does. */
async function plan(t: ExecutionContext, yaml: string, services = new Map<string, unknown>()) {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-include-');
  const runlist = await loadRunlist(await writeRunlist(dir, 'site.yaml', yaml), builtins);
  const context = {
    host: localHost({ root }),
    mode: 'plan' as const,
    service: <T>(key: string, create: () => T): T => {
      if (!services.has(key)) services.set(key, create());
      return services.get(key) as T;
    },
  };
  return { root, runlist, context, declared: async () => declaredOf(await planRunlist(runlist, context)) };
}

/** planRunlist's resources, whether it returns them as a list or as a plan's `declared` (the shape is changing under issue 10). */
function declaredOf(plan: Declared[] | { declared: Declared[] }): Declared[] {
  return Array.isArray(plan) ? plan : plan.declared;
}

test.serial("a recipe that includes another gets its declarations, with the included schema's defaults, and they converge", async (t) => {
  const { root, declared } = await plan(t, 'name: site\nrecipes:\n  - recipe: site\n    attributes: { name: vm-1 }\n');
  const planned = await declared();
  t.deepEqual(
    planned.map((d) => d.ref),
    ['directory[/etc]', 'file[/etc/motd]', 'file[/etc/hostname]'],
  );
  t.like(planned[1]!.spec, { path: '/etc/motd', content: 'welcome to vm-1\n', mode: 0o644 });
  t.regex(planned[1]!.declaredAt ?? '', /^test\/engine\/include\.test\.ts:\d+$/, "declared at the included recipe's line");
  t.not(planned[1]!.declaredAt, planned[2]!.declaredAt);
  await convergesOnce(t, root, () => planned);
});

test.serial("the included recipe gets the caller's context: its mode, its runlist and the same per-run services", async (t) => {
  seen.contexts = [];
  const services = new Map<string, unknown>([['client', { id: 'shared' }]]);
  const { declared } = await plan(t, 'name: site\nrecipes:\n  - recipe: site\n    attributes: { name: vm-1 }\n', services);
  await declared();
  t.is(seen.contexts.length, 1);
  const ctx = seen.contexts[0]!;
  t.is(ctx.mode, 'plan');
  t.like(ctx.runlist, { name: 'site', recipes: ['site'] });
  t.is(
    ctx.service<unknown>('client', () => ({ id: 'new' })),
    services.get('client'),
  );
});

test.serial('bad attributes for the included recipe are an InputError naming it and the attribute path; it declares nothing', async (t) => {
  seen.declared = 0;
  const { declared } = await plan(t, 'name: site\nrecipes:\n  - recipe: site\n    attributes: { name: vm-1, motd: { file: { mode: rwx } } }\n');
  const error = await t.throwsAsync(declared(), { instanceOf: InputError });
  t.is(error?.where, 'recipe motd');
  t.is(error?.message, 'recipe motd: attributes.file.mode: expected an octal mode such as "0644"');
  t.is(seen.declared, 0, 'motd.declare is not called with attributes its schema refuses');

  const unknown = await plan(t, 'name: site\nrecipes:\n  - recipe: site\n    attributes: { name: vm-1, motd: { colour: red } }\n');
  await t.throwsAsync(unknown.declared(), { instanceOf: InputError, message: /^recipe motd: attributes: Unrecognized key: "colour"/ });
});

test.serial('include checks the attributes it is given directly, as their type says', async (t) => {
  const { runlist, context } = await plan(t, 'name: site\nrecipes:\n  - recipe: motd\n    attributes: { text: hi }\n');
  const ctx: RecipeContext = { ...context, runlist: { name: runlist.name, file: runlist.file, dir: runlist.dir, recipes: ['motd'] } };
  t.deepEqual(
    (await include(motd, { text: 'hi' }, ctx)).map((d) => d.ref),
    ['directory[/etc]', 'file[/etc/motd]'],
    'defaults fill what is left out',
  );
  // @ts-expect-error text is a string: the attributes of include are typed by the included recipe's schema
  const wrong = include(motd, { text: 42 }, ctx);
  await t.throwsAsync(wrong, { instanceOf: InputError, message: 'recipe motd: attributes.text: Invalid input: expected string, received number' });
  await t.throwsAsync(include(motd, { text: 'hi', file: { path: 'etc/motd' } }, ctx), {
    instanceOf: InputError,
    message: 'recipe motd: attributes.file.path: path must be absolute (got "etc/motd")',
  });
});

test.serial("what an included recipe declares meets the runlist's other declarations: equal once, different named at both lines", async (t) => {
  const both = (name: string) =>
    `name: site\nrecipes:\n  - recipe: motd\n    attributes: { text: welcome to vm-1 }\n  - recipe: site\n    attributes: { name: ${name} }\n`;
  const same = await (await plan(t, both('vm-1'))).declared();
  t.deepEqual(
    same.map((d) => d.ref),
    ['directory[/etc]', 'file[/etc/motd]', 'file[/etc/hostname]'],
    'motd declared by the runlist and by site: once',
  );

  await t.throwsAsync((await plan(t, both('vm-2'))).declared(), {
    instanceOf: InputError,
    message:
      /^file\[\/etc\/motd\]: declared twice with different specs: at test\/engine\/include\.test\.ts:\d+ \(.*site\.yaml:3 recipes\[0\]\) and at test\/engine\/include\.test\.ts:\d+ \(.*site\.yaml:5 recipes\[1\]\)/,
  });
});

test('the built-in recipes are loaded only for a runlist that names one', async (t) => {
  const dir = await scratchRoot(t, 'meshvm-include-');
  let loads = 0;
  const lazy = async () => (loads++, builtins);
  await fs.writeFile(
    path.join(dir, 'own.ts'),
    `import { defineRecipe, z } from ${JSON.stringify(pathToFileURL(path.join(PROJECT, 'index.ts')).href)};\n` +
      `export default defineRecipe({ name: 'own', attributes: z.strictObject({}), declare: () => [] });\n`,
  );
  const modules = await loadRunlist(await writeRunlist(dir, 'modules.yaml', 'name: m\nrecipes:\n  - recipe: ./own.ts\n'), lazy);
  t.deepEqual(
    modules.entries.map((e) => e.recipe.name),
    ['own'],
  );
  t.is(loads, 0, 'a runlist of recipe modules alone never loads the built-ins');
  const named = await loadRunlist(await writeRunlist(dir, 'named.yaml', 'name: n\nrecipes:\n  - recipe: motd\n    attributes: { text: hi }\n'), lazy);
  t.deepEqual(
    named.entries.map((e) => e.recipe.name),
    ['motd'],
  );
  t.is(loads, 1);
  await t.throwsAsync(loadRunlist(await writeRunlist(dir, 'unknown.yaml', 'name: u\nrecipes:\n  - recipe: nope\n'), lazy), {
    instanceOf: InputError,
    message: /unknown recipe "nope" \(built-in: motd, site;/,
  });
});
