// Recipes: typed functions of attributes (validated by a schema, their type inferred from it) that declare resources.
import type { z } from 'zod';
import type { Host, HostReader } from './host.ts';
import type { RunStatus } from './run-status.ts';
import { flatten, type Declaration, type Declared } from './resource.ts';

export { flatten, type Declaration };
import type { Check, CheckContext } from './check.ts';
import { InputError } from './errors.ts';
import { formatIssue } from './validate.ts';

export interface RecipeContext {
  /** Read-only view of the machine (recipes decide what to declare; resources do the changing). */
  host: HostReader;
  /** The runlist's name, file, directory and the names of its recipes (a recipe may notify what another one manages). */
  runlist: { name: string; file: string; dir: string; recipes: readonly string[] };
  /** 'plan' or 'converge': a recipe that fetches data (tokens, certs) may skip minting in plan. */
  mode: 'plan' | 'converge';
  /** Per-run services (clients, caches) shared by the recipes of one run, created on first use. */
  service<T>(key: string, create: () => T): T;
  /**
   * The machine writable, for what meshvm keeps of its own between runs (the cluster access and inputs kept under
   * /run/meshvm, an unwrapped secret_id), through the same safe path walk as every change: given to a converge (and
   * offboard) only, so that plan and verify cannot write.
   */
  writable?: Host;
  /** Cluster inputs kept between runs are not used, everything is read fresh (--refresh; verify, which checks what is true now). */
  refresh?: boolean;
  /** Tells the operator something that does not stop the run (a kept file ignored). Default: stderr. */
  warn?(text: string): void;
}

/** What a recipe's undo gets: the run's context, whether to purge, and a way to say what it found and left alone. */
export interface UndoContext extends RecipeContext {
  /** --purge: also remove what a later join would reuse (the sidecar package, the istio-proxy account). */
  purge: boolean;
  /** Says what offboarding found and leaves as it is (not provably meshvm's): printed, and kept in the report's notes. */
  note(text: string): void;
}

/** What a recipe's publish gets: the run's context, the machine writable (for what it keeps of its last publish). */
export interface PublishContext extends RecipeContext {
  host: Host;
}

export interface Recipe<Schema extends z.ZodObject = z.ZodObject> {
  readonly kind: 'recipe';
  readonly name: string;
  readonly description: string;
  readonly attributes: Schema;
  declare(attributes: z.output<Schema>, context: RecipeContext): Declaration | Promise<Declaration>;
  /** What `meshvm verify` checks for this recipe: that what it declared works (names resolve, ports answer, certs chain). */
  checks?(attributes: z.output<Schema>, context: CheckContext): Promise<Check[]>;
  /**
   * How `meshvm offboard` undoes what declare did, written next to it: declarations that remove only what is provably
   * meshvm's (files it wrote, its markers, objects it owns), services stopped and disabled. Offboarding plans the undo of
   * every recipe in reverse runlist order and runs them as converge runs declarations; a recipe without undo leaves its
   * resources as they are.
   */
  undo?(attributes: z.output<Schema>, context: UndoContext): Declaration | Promise<Declaration>;
  /**
   * After a converge (never plan, verify or offboard), before the run's services close: shows the run's status where the
   * fleet is watched from (the registration's Kubernetes object). Says what it did, or nothing; a failure is a warning.
   */
  publish?(attributes: z.output<Schema>, status: RunStatus, context: PublishContext): Promise<string | undefined>;
}

export function defineRecipe<Schema extends z.ZodObject>(recipe: Omit<Recipe<Schema>, 'kind' | 'description'> & { description?: string }): Recipe<Schema> {
  return { kind: 'recipe', description: '', ...recipe };
}

export function isRecipe(value: unknown): value is Recipe {
  return typeof value === 'object' && value !== null && (value as Recipe).kind === 'recipe' && typeof (value as Recipe).declare === 'function';
}

/** Composition is a function call: validates the attributes against the included recipe's schema, then declares. */
export async function include<Schema extends z.ZodObject>(recipe: Recipe<Schema>, attributes: z.input<Schema>, context: RecipeContext): Promise<Declared[]> {
  const parsed = recipe.attributes.safeParse(attributes);
  if (!parsed.success) throw new InputError(`recipe ${recipe.name}`, formatIssue(parsed.error.issues[0]!, ['attributes']));
  return flatten(await recipe.declare(parsed.data, context));
}
