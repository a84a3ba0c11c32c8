// JSON Schemas for editors (`meshvm schema runlist|node`, schemas/*.json): generated from the runlist and node-file
// envelopes and the built-in recipes' own zod schemas, so the editor checks what a run checks, from one source.
import { z } from 'zod';
import type { Recipe } from './recipe.ts';
import { nodeEnvelope, runlistEnvelope } from './runlist.ts';

export const SCHEMA_KINDS = ['runlist', 'node'] as const;
export type SchemaKind = (typeof SCHEMA_KINDS)[number];

type JsonSchema = Record<string, unknown>;

/** Where the shipped copies live (relative to the package root), and the $id each carries. */
export const SCHEMA_FILES: Record<SchemaKind, string> = { runlist: 'schemas/runlist.schema.json', node: 'schemas/node.schema.json' };

/** A recipe module named by path instead of a built-in name (as engine/runlist.ts resolves it). */
const RECIPE_PATH = String.raw`^(\./|\.\./|/)|\.(ts|js|mjs)$`;

function toJson(schema: z.ZodType): JsonSchema {
  // input: what a person writes (defaults optional, before transforms); refinements a schema cannot say are left open
  const json = z.toJSONSchema(schema, { target: 'draft-7', io: 'input', unrepresentable: 'any' }) as JsonSchema;
  delete json.$schema;
  return json;
}

/**
 * A recipe's attributes as an editor can check them in any one layer: nothing required (a value may come from the
 * runlist, the node file or --set), every misspelt key still refused (the recipes' objects are strict).
 */
function recipeAttributes(recipe: Recipe, definitions: JsonSchema): JsonSchema {
  const json = toJson(recipe.attributes);
  const prefix = `${recipe.name}.`;
  const local = (json.definitions ?? json.$defs) as Record<string, unknown> | undefined;
  delete json.definitions;
  delete json.$defs;
  const rewritten = rewrite(json, prefix) as JsonSchema;
  for (const [name, def] of Object.entries(local ?? {})) definitions[prefix + name] = rewrite(def, prefix);
  if (recipe.description) rewritten.description = recipe.description;
  return rewritten;
}

/** Drops `required` (layers merge) and moves local $refs into the shared definitions under the recipe's name. */
function rewrite(node: unknown, prefix: string): unknown {
  if (Array.isArray(node)) return node.map((n) => rewrite(n, prefix));
  if (node === null || typeof node !== 'object') return node;
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === 'required' && Array.isArray(value)) continue;
    if (key === '$ref' && typeof value === 'string') {
      out.$ref = value.replace(/^#\/(\$defs|definitions)\//, `#/definitions/${prefix}`);
      continue;
    }
    // `properties` maps names to schemas: a property called "required" is a schema, kept
    out[key] =
      key === 'properties' || key === 'definitions' || key === '$defs'
        ? Object.fromEntries(Object.entries(value as JsonSchema).map(([k, v]) => [k, rewrite(v, prefix)]))
        : rewrite(value, prefix);
  }
  return out;
}

/** Attributes shared across recipes (runlist `attributes:`, the node file): every recipe's keys, plus a block per recipe name. */
function sharedAttributes(recipes: readonly Recipe[], perRecipe: ReadonlyMap<string, JsonSchema>): JsonSchema {
  // key -> the recipes taking it, grouped by identical schema (a key such as `flow` means the same to most recipes)
  const byKey = new Map<string, { recipes: string[]; schemas: Map<string, { first: string; schema: JsonSchema }> }>();
  for (const recipe of recipes) {
    const props = (perRecipe.get(recipe.name)!.properties ?? {}) as Record<string, JsonSchema>;
    for (const [key, schema] of Object.entries(props)) {
      const entry = byKey.get(key) ?? { recipes: [] as string[], schemas: new Map<string, { first: string; schema: JsonSchema }>() };
      entry.recipes.push(recipe.name);
      const text = JSON.stringify(schema);
      if (!entry.schemas.has(text)) entry.schemas.set(text, { first: recipe.name, schema });
      byKey.set(key, entry);
    }
  }
  const properties: Record<string, JsonSchema> = {};
  for (const [key, { recipes: takers, schemas }] of [...byKey].sort(([a], [b]) => a.localeCompare(b))) {
    // each schema once, in its recipe's definition: referred to, not copied
    const refs = [...schemas.values()].map(({ first }) => ({ $ref: `${recipeRef(first)}/properties/${key}` }));
    const own = schemas.size === 1 ? ([...schemas.values()][0]!.schema.description as string | undefined) : undefined;
    properties[key] = { description: `${own ? `${own} ` : ''}(taken by: ${takers.join(', ')})`, ...(refs.length === 1 ? { allOf: refs } : { anyOf: refs }) };
  }
  for (const recipe of recipes) {
    if (recipe.name in properties) continue; // a recipe whose name is also an attribute (files): the attribute wins, as at run time
    properties[recipe.name] = { $ref: recipeRef(recipe.name) };
  }
  return { type: ['object', 'null'], properties, additionalProperties: false };
}

/** Each recipe's attributes once, under definitions, referred to by the shared blocks and the runlist's entries. */
const recipeRef = (name: string) => `#/definitions/recipe:${name}`;

/** The JSON Schema of a runlist or a node file, for the given recipes (the built-ins). */
export function jsonSchema(kind: SchemaKind, builtins: ReadonlyMap<string, Recipe>): JsonSchema {
  const recipes = [...builtins.values()].sort((a, b) => a.name.localeCompare(b.name));
  const definitions: JsonSchema = {};
  const perRecipe = new Map(recipes.map((r) => [r.name, recipeAttributes(r, definitions)]));
  const shared = sharedAttributes(recipes, perRecipe);
  // an empty `attributes:` (null) is allowed wherever a recipe's attributes go, as the loader reads it as {}
  for (const [name, schema] of perRecipe) definitions[`recipe:${name}`] = { ...schema, type: ['object', 'null'] };
  const head = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: `https://meshvm.dev/${SCHEMA_FILES[kind]}`,
    title: kind === 'runlist' ? 'meshvm runlist' : 'meshvm node file (/etc/meshvm/node.yaml)',
  };
  let body: JsonSchema;
  if (kind === 'node') {
    body = toJson(nodeEnvelope);
    (body.properties as JsonSchema).attributes = shared;
  } else {
    body = toJson(runlistEnvelope);
    const props = body.properties as Record<string, JsonSchema>;
    props.attributes = shared;
    const item = (props.recipes as { items: JsonSchema }).items;
    const itemProps = item.properties as Record<string, JsonSchema>;
    itemProps.recipe = {
      anyOf: [
        { enum: recipes.map((r) => r.name), description: 'a built-in recipe' },
        { type: 'string', pattern: RECIPE_PATH, description: 'a recipe module, relative to the runlist' },
      ],
    };
    itemProps.attributes = { type: ['object', 'null'], description: "this recipe's own attributes" };
    item.allOf = recipes.map((r) => ({
      if: { properties: { recipe: { const: r.name } }, required: ['recipe'] },
      // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword, not a thenable
      then: { properties: { attributes: { $ref: recipeRef(r.name) } } },
    }));
  }
  return { ...head, ...body, ...(Object.keys(definitions).length ? { definitions } : {}) };
}

export function schemaText(kind: SchemaKind, builtins: ReadonlyMap<string, Recipe>): string {
  return JSON.stringify(jsonSchema(kind, builtins), null, 2) + '\n';
}

export function isSchemaKind(value: string | undefined): value is SchemaKind {
  return (SCHEMA_KINDS as readonly string[]).includes(value ?? '');
}
