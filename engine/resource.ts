// The resource contract (read, diff, apply, refresh) and defineResource, which turns a type into a declaration function.
import { isDeepStrictEqual } from 'node:util';
import type { z } from 'zod';
import type { Host, HostReader } from './host.ts';
import { InputError } from './errors.ts';
import { secrets } from './secrets.ts';
import { formatIssue } from './validate.ts';

/** What differs, field by field; {} means converged. */
export type Changes<State> = { [F in keyof State]?: { from: State[F] | undefined; to: State[F] } };

export interface ResourceType<Spec, State> {
  /** The word in the ref: "file" in file[/etc/hosts]. */
  kind: string;
  /** Validates a declaration; its errors name the resource ref and the field. */
  schema: z.ZodType<Spec>;
  /** Identity on the machine. */
  key(spec: Spec): string;
  /** Reads only; undefined means absent. */
  current(host: HostReader, spec: Spec): Promise<State | undefined>;
  /** Pure; compares only the fields the spec sets. */
  changes(spec: Spec, current: State | undefined): Changes<State>;
  /** Converges only what differs. */
  apply(host: Host, spec: Spec, changes: Changes<State>, current: State | undefined): Promise<void>;
  /** What "notified" means (restart, reload, re-run). */
  refresh?(host: Host, spec: Spec): Promise<void>;
  /** True when the apply already did what a refresh would (a service started in this run needs no restart). */
  applySatisfiesRefresh?(changes: Changes<State>): boolean;
  /** Fields never shown in output, reports or errors. */
  sensitive?(spec: Spec): readonly (keyof State & string)[];
  /** Plan/report lines for a change when the generic ones do not read well. */
  describe?(field: keyof State & string, change: { from: unknown; to: unknown }): string | undefined;
}

export interface Declared<Spec = any, State = any> {
  readonly type: ResourceType<Spec, State>;
  readonly spec: Spec;
  readonly ref: string;
  /** The recipe line that declared it: "recipes/dns.ts:24". */
  readonly declaredAt: string | undefined;
  readonly notifies: readonly Declared[];
  readonly refreshable: boolean;
}

/** A declaration whose kind can be notified. */
export type Notifiable = Declared & { readonly refreshable: true };

export interface DeclareOptions {
  /** Refreshed once at the end of the run if this resource changed. */
  notifies?: Notifiable | readonly Notifiable[];
}

type DeclareFn<Spec, State, R extends boolean> = (input: any, options?: DeclareOptions) => Declared<Spec, State> & { readonly refreshable: R };
type Factory<Schema extends z.ZodType, State, R extends boolean> = (input: z.input<Schema>, options?: DeclareOptions) => Declared<z.output<Schema>, State> & { readonly refreshable: R };

/** Turns a resource type into the function recipes call: `File({ path, content }, { notifies: service })`. */
export function defineResource<Schema extends z.ZodType, State>(
  type: ResourceType<z.output<Schema>, State> & { schema: Schema; refresh(host: Host, spec: z.output<Schema>): Promise<void> },
): Factory<Schema, State, true>;
export function defineResource<Schema extends z.ZodType, State>(type: ResourceType<z.output<Schema>, State> & { schema: Schema }): Factory<Schema, State, false>;
export function defineResource<Spec, State>(type: ResourceType<Spec, State>): DeclareFn<Spec, State, boolean> {
  const refreshable = typeof type.refresh === 'function';
  return function declare(input, options = {}) {
    const declaredAt = callerLocation();
    const tentativeRef = `${type.kind}[${guessKey(type, input)}]`;
    const parsed = type.schema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new InputError(tentativeRef + (declaredAt ? ` (declared at ${declaredAt})` : ''), formatIssue(issue));
    }
    const spec = parsed.data;
    for (const field of type.sensitive?.(spec) ?? []) secrets.add((spec as Record<string, unknown>)[field]);
    const notifies = options.notifies === undefined ? [] : Array.isArray(options.notifies) ? options.notifies : [options.notifies as Notifiable];
    const ref = `${type.kind}[${type.key(spec)}]`;
    for (const target of notifies) {
      if (!target?.refreshable) {
        throw new InputError(ref, `notifies ${target?.ref ?? String(target)}, whose kind has no refresh (only services, commands and the like can be notified)`);
      }
    }
    return { type, spec, ref, declaredAt, notifies, refreshable };
  };
}

function guessKey(type: { key(spec: any): string }, input: unknown): string {
  try {
    return type.key(input);
  } catch {
    return '?';
  }
}

/** Compares the fields a spec sets against the current state; absent state means every set field changes. */
export function compareFields<Spec extends object, State extends object>(
  spec: Spec,
  current: State | undefined,
  fields: readonly (keyof Spec & keyof State)[],
): Changes<State> {
  const changes: Changes<State> = {};
  for (const field of fields) {
    const want = spec[field] as unknown;
    if (want === undefined) continue;
    const have = current?.[field] as unknown;
    if (!isDeepStrictEqual(want, have)) {
      (changes as Record<string, unknown>)[field as string] = { from: have, to: want };
    }
  }
  return changes;
}

export function hasChanges(changes: object): boolean {
  return Object.keys(changes).length > 0;
}

const ENGINE_DIR = new URL('.', import.meta.url).pathname;
const RESOURCES_DIR = new URL('../resources/', import.meta.url).pathname;

/** The first stack frame outside the engine and the resource kinds: where a recipe declared something. */
function callerLocation(): string | undefined {
  // structured call sites: no stack string is formatted (that was a fifth of a 1,000-resource plan)
  const prepare = Error.prepareStackTrace;
  const limit = Error.stackTraceLimit;
  Error.prepareStackTrace = (_error, sites) => sites;
  Error.stackTraceLimit = 12;
  const holder: { stack?: NodeJS.CallSite[] } = {};
  Error.captureStackTrace(holder, callerLocation);
  const sites = holder.stack ?? [];
  Error.prepareStackTrace = prepare;
  Error.stackTraceLimit = limit;
  for (const site of sites) {
    let file = site.getFileName();
    if (!file) continue;
    if (file.startsWith('file://')) file = decodeURIComponent(new URL(file).pathname);
    if (file.startsWith(ENGINE_DIR) || file.startsWith(RESOURCES_DIR) || file.startsWith('node:')) continue;
    return `${relativeToCwd(file)}:${site.getLineNumber()}`;
  }
  return undefined;
}

function relativeToCwd(file: string): string {
  const cwd = process.cwd() + '/';
  return file.startsWith(cwd) ? file.slice(cwd.length) : file;
}
