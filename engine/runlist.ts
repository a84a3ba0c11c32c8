// Runlists: YAML naming recipes, validated twice (envelope, then each recipe's attributes), with attribute precedence.
import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { InputError, errorMessage } from './errors.ts';
import { isRecipe, type Recipe } from './recipe.ts';
import { checkTrusted, readInputFile } from './input.ts';
import { formatIssue, formatPath } from './validate.ts';
import { decimalModeProblem, parseScalar, parseYaml, type ParsedYaml } from './yaml.ts';

export interface RunlistEntry {
  recipe: Recipe;
  attributes: Record<string, unknown>;
  /** "runlists/x.yaml:12 recipes[1]" */
  where: string;
}

export interface Runlist {
  name: string;
  file: string;
  dir: string;
  entries: RunlistEntry[];
}

export interface AttributeSources {
  /** Host path of the node file; `required` when given by --node. */
  nodeFile?: { path: string; required: boolean };
  /** --set key=value, in order. */
  sets?: readonly string[];
}

const attributeMap = z.record(z.string(), z.unknown());

/** The runlist file's envelope (each recipe's own attributes are checked by its schema); also the source of `meshvm schema runlist`. */
export const runlistEnvelope = z.strictObject({
  name: z.string().min(1),
  description: z.string().optional(),
  /** Attributes shared by every recipe of the runlist that takes them. */
  attributes: attributeMap.default({}),
  recipes: z.array(z.strictObject({ recipe: z.string().min(1), attributes: attributeMap.nullish().transform((a) => a ?? {}) })),
});

/** The node file's envelope; also the source of `meshvm schema node`. */
export const nodeEnvelope = z.strictObject({ attributes: attributeMap.nullish().transform((a) => a ?? {}) });

/** One layer of attributes and where it came from, for error messages. */
interface Layer {
  values: Record<string, unknown>;
  where: (path: readonly PropertyKey[]) => string;
}

/**
 * The built-in recipes by name, or what loads them: the command loads them only for a runlist that names one (a run of
 * recipe modules alone then never builds their attribute schemas, nor loads the clients they use).
 */
export type Builtins = ReadonlyMap<string, Recipe> | (() => Promise<ReadonlyMap<string, Recipe>>);

export async function builtinsOf(builtins: Builtins): Promise<ReadonlyMap<string, Recipe>> {
  return typeof builtins === 'function' ? await builtins() : builtins;
}

export async function loadRunlist(file: string, builtins: Builtins, sources: AttributeSources = {}): Promise<Runlist> {
  const shown = displayPath(file);
  const text = (await readInputFile(file, shown, 'runlist'))!;
  const doc = parseYaml(text, shown);
  const data = check(runlistEnvelope, doc.value ?? {}, doc, [], 'runlist');
  const dir = path.dirname(path.resolve(file));

  const recipes: Recipe[] = [];
  for (const [i, entry] of data.recipes.entries()) {
    recipes.push(await resolveRecipe(entry.recipe, dir, builtins, doc.where(['recipes', i, 'recipe']) + `: recipes[${i}].recipe`));
  }
  const names = new Map(recipes.map((r) => [r.name, r]));

  const shared: Layer = { values: data.attributes, where: (p) => `${doc.where(['attributes', ...p])}: attributes.${formatPath(p)}` };
  const node = await readNodeLayer(sources.nodeFile);
  const sets = parseSets(sources.sets ?? []);

  const entries = data.recipes.map((entry, i) => {
    const recipe = recipes[i]!;
    const own: Layer = {
      values: entry.attributes,
      where: (p) => `${doc.where(['recipes', i, 'attributes', ...p])}: recipes[${i}].attributes${p.length ? '.' + formatPath(p) : ''}`,
    };
    const layers = [scoped(shared, recipe, names), own, ...(node ? [scoped(node, recipe, names)] : []), scoped(sets, recipe, names)];
    const merged = layers.reduce<Record<string, unknown>>((acc, layer) => deepMerge(acc, layer.values), {});
    const parsed = recipe.attributes.safeParse(merged);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const source = [...layers].reverse().find((layer) => hasPath(layer.values, issue.path)) ?? own;
      throw new InputError(source.where(issue.path), `${issue.message} (recipe ${recipe.name})`);
    }
    return { recipe, attributes: parsed.data as Record<string, unknown>, where: `${doc.where(['recipes', i])} recipes[${i}]` };
  });

  for (const layer of [shared, ...(node ? [node] : []), sets]) checkKnown(layer, recipes, names);
  return { name: data.name, file: shown, dir, entries };
}

/** The part of a layer a recipe sees: keys its schema takes, plus a block keyed by its name. */
function scoped(layer: Layer, recipe: Recipe, _names: ReadonlyMap<string, Recipe>): Layer {
  const shape = recipe.attributes.shape as Record<string, unknown>;
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(layer.values)) {
    if (key in shape) values[key] = value;
  }
  const block = layer.values[recipe.name];
  if (!(recipe.name in shape) && block && typeof block === 'object' && !Array.isArray(block)) {
    Object.assign(values, block);
    return { values, where: (p) => (hasPath(block as Record<string, unknown>, p) ? layer.where([recipe.name, ...p]) : layer.where(p)) };
  }
  return { values, where: layer.where };
}

/** A key in the runlist's shared attributes, the node file or --set that no recipe takes is a typo until proven otherwise. */
function checkKnown(layer: Layer, recipes: readonly Recipe[], names: ReadonlyMap<string, Recipe>): void {
  for (const key of Object.keys(layer.values)) {
    if (names.has(key)) continue;
    if (recipes.some((r) => key in (r.attributes.shape as object))) continue;
    const known = [...new Set(recipes.flatMap((r) => Object.keys(r.attributes.shape as object)))].sort();
    throw new InputError(
      layer.where([key]),
      `unknown attribute "${key}": no recipe of this runlist takes it (known: ${known.join(', ') || 'none'}; or name a recipe: ${[...names.keys()].join(', ')})`,
    );
  }
}

async function resolveRecipe(name: string, dir: string, builtins: Builtins, where: string): Promise<Recipe> {
  const isPath = name.startsWith('./') || name.startsWith('../') || name.startsWith('/') || /\.(ts|js|mjs)$/.test(name);
  if (!isPath) {
    const known = await builtinsOf(builtins);
    const recipe = known.get(name);
    if (!recipe)
      throw new InputError(where, `unknown recipe "${name}" (built-in: ${[...known.keys()].sort().join(', ')}; or a module path such as ./my-recipe.ts)`);
    return recipe;
  }
  const file = path.resolve(dir, name);
  if (!(await fs.stat(file).catch(() => undefined))?.isFile()) throw new InputError(where, `recipe module ${name} not found (looked for ${file})`);
  await checkTrusted(file, where, `recipe module ${name}`);
  let module: Record<string, unknown>;
  try {
    module = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (error) {
    throw new InputError(where, `recipe module ${name} failed to load: ${errorMessage(error)}`);
  }
  if (isRecipe(module.default)) return module.default;
  const exported = Object.values(module).filter(isRecipe);
  if (exported.length === 1) return exported[0]!;
  throw new InputError(
    where,
    exported.length
      ? `recipe module ${name} exports ${exported.length} recipes; export the one to run as default`
      : `recipe module ${name} exports no recipe (export default defineRecipe({...}))`,
  );
}

async function readNodeLayer(nodeFile: AttributeSources['nodeFile']): Promise<Layer | undefined> {
  if (!nodeFile) return undefined;
  const shown = displayPath(nodeFile.path);
  const text = await readInputFile(nodeFile.path, shown, 'node file', {
    optional: !nodeFile.required,
    cannotOpen: (error) => new InputError(nodeFile.required ? `--node ${shown}` : shown, `cannot read the node file: ${errorMessage(error)}`),
  });
  if (text === undefined) return undefined;
  const doc = parseYaml(text, shown);
  const data = check(nodeEnvelope, doc.value ?? {}, doc, [], 'node file');
  return { values: data.attributes, where: (p) => `${doc.where(['attributes', ...p])}: attributes.${formatPath(p)}` };
}

function parseSets(sets: readonly string[]): Layer {
  const values: Record<string, unknown> = {};
  const origin = new Map<string, string>();
  for (const set of sets) {
    const eq = set.indexOf('=');
    const key = eq > 0 ? set.slice(0, eq) : '';
    if (!/^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*$/.test(key))
      throw new InputError(`--set ${set}`, 'expected key=value, the key a dotted attribute path such as sidecar.inboundPorts');
    const parts = key.split('.');
    let target = values;
    for (const part of parts.slice(0, -1)) {
      if (!isPlainObject(target[part])) target[part] = {};
      target = target[part] as Record<string, unknown>;
    }
    const modeProblem = decimalModeProblem(parts.at(-1)!, set.slice(eq + 1));
    if (modeProblem) throw new InputError(`--set ${set}`, modeProblem);
    target[parts.at(-1)!] = parseScalar(set.slice(eq + 1));
    origin.set(parts[0]!, set);
  }
  return { values, where: (p) => `--set ${origin.get(String(p[0])) ?? formatPath(p)}` + (p.length > 1 ? ` (${formatPath(p)})` : '') };
}

function check<T extends z.ZodType>(schema: T, value: unknown, doc: ParsedYaml, prefix: PropertyKey[], what: string): z.output<T> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const where = doc.where([...prefix, ...issue.path]);
  throw new InputError(issue.path.length ? `${where}: ${formatPath(issue.path)}` : where, `${what}: ${formatIssue({ ...issue, path: [] })}`);
}

function displayPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative && !relative.startsWith('..') ? relative : file;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    out[key] = isPlainObject(value) && isPlainObject(out[key]) ? deepMerge(out[key] as Record<string, unknown>, value) : value;
  }
  return out;
}

function hasPath(values: unknown, p: readonly PropertyKey[]): boolean {
  let node = values;
  for (const part of p) {
    if (node === null || typeof node !== 'object' || !(part in (node as object))) return false;
    node = (node as Record<PropertyKey, unknown>)[part];
  }
  return p.length > 0;
}
