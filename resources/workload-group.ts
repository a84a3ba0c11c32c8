// WorkloadGroup (networking.istio.io/v1) ensured by server-side apply, and what the registration kinds share: an API object meshvm owns, diffed field by field.
import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import { defineResource, hasChanges, type Changes, type ResourceType } from '../engine/resource.ts';
import type { Host, HostReader } from '../engine/host.ts';
import type { KubernetesClient } from '../clients/kubernetes.ts';
import { isDnsLabel, isDnsSubdomain, isIpAddress, isLabelKey, isLabelValue, lineProblem } from '../engine/values.ts';
import {
  applyObject,
  deleteObject,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  FIELD_MANAGER,
  managedByMeshvm,
  readObject,
  WORKLOAD_GROUPS,
  type KubeObject,
  type ObjectApi,
} from '../clients/workload-group.ts';

// ---- values from outside, typed where they enter (Kubernetes' and Istio's own validation rules) ----

const show = (value: unknown): string => JSON.stringify(value);

/** Why a string is not a label (or annotation) key, or undefined: [prefix/]name, the prefix a DNS subdomain, the name 63 at most. */
export function labelKeyProblem(key: string): string | undefined {
  return isLabelKey(key)
    ? undefined
    : `not a label key: ${show(key)} (an optional DNS-subdomain prefix and "/", then at most 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit)`;
}

/** Why a string is not a label value, or undefined: empty, or at most 63 letters, digits, "-", "_", "." between alphanumerics. */
export function labelValueProblem(value: string): string | undefined {
  return isLabelValue(value)
    ? undefined
    : `not a label value: ${show(value)} (at most 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit; no newlines)`;
}

/** Labels as Kubernetes validates them; meshvm's own managed-by label is not the caller's to set. */
export const labelMap = z.record(z.string(), z.string()).superRefine((map, ctx) => {
  for (const [key, value] of Object.entries(map)) {
    const problem = labelKeyProblem(key) ?? labelValueProblem(value);
    if (problem) ctx.addIssue({ code: 'custom', path: [key], message: problem });
    else if (key === MANAGED_BY_LABEL) ctx.addIssue({ code: 'custom', path: [key], message: `meshvm sets ${MANAGED_BY_LABEL} itself; remove it` });
  }
});

/**
 * Annotations: keys as label keys; values free text but for control characters other than newline and tab (Istio's
 * proxy.istio.io/config annotation is YAML, several lines).
 */
export const annotationMap = z.record(z.string(), z.string()).superRefine((map, ctx) => {
  for (const [key, value] of Object.entries(map)) {
    const problem =
      labelKeyProblem(key) ??
      (lineProblem(value.replaceAll('\n', '').replaceAll('\t', '')) ? `annotation value ${show(value)} has a control character (NUL, CR, ESC...)` : undefined);
    if (problem) ctx.addIssue({ code: 'custom', path: [key], message: problem });
  }
});

/** A Kubernetes object name (a DNS-1123 subdomain). */
export const objectName = z.string().refine(isDnsSubdomain, {
  error: (i) => `not an object name: ${show(i.input)} (lower case letters, digits, "-" and ".", at most 253)`,
});

/** A namespace, port or Service name (a DNS-1123 label). */
export const dnsLabel = z
  .string()
  .refine(isDnsLabel, { error: (i) => `not a DNS-1123 label: ${show(i.input)} (lower case letters, digits and "-", at most 63)` });

export const port = z.number().int().min(1, 'a port is between 1 and 65535').max(65535, 'a port is between 1 and 65535');

/** Port name → number (Istio: the name a Service port uses, the number this workload listens on). */
export const portMap = z.record(z.string(), port).superRefine((map, ctx) => {
  for (const name of Object.keys(map)) {
    if (!isDnsLabel(name))
      ctx.addIssue({ code: 'custom', path: [name], message: `not a port name: ${show(name)} (a DNS-1123 label: lower case letters, digits and "-")` });
  }
});

/** The mesh network (it is also the value of the topology.istio.io/network label, so a label value). */
export const networkName = z.string().superRefine((v, ctx) => {
  const problem = v === '' ? 'a network name is not empty (leave it out instead)' : labelValueProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem.replace('label value', 'network name') });
});

/** region[/zone[/subzone]]. */
export const locality = z.string().superRefine((v, ctx) => {
  const parts = v.split('/');
  if (parts.length > 3 || parts.some((p) => labelValueProblem(p) !== undefined || p === ''))
    ctx.addIssue({ code: 'custom', message: `not a locality: ${show(v)} (region/zone/subzone, each a label value)` });
});

export const weight = z.number().int().min(1).max(4294967295);

/** One line of text: no newline, no NUL. */
const text = (what: string) =>
  z.string().superRefine((v, ctx) => {
    const problem = lineProblem(v);
    if (problem) ctx.addIssue({ code: 'custom', message: `${what} ${show(v)} has a control character (${problem})` });
  });

const probeHost = z.string().refine((v) => isIpAddress(v) || isDnsSubdomain(v), { error: (i) => `not an IP address or DNS name: ${show(i.input)}` });

const positive = z.number().int().min(1).max(2147483647);

/** Istio's ReadinessProbe (WorkloadGroup spec.probe): exactly one of httpGet, tcpSocket and exec. */
export const probe = z
  .strictObject({
    initialDelaySeconds: z.number().int().min(0).max(2147483647).optional(),
    timeoutSeconds: positive.optional(),
    periodSeconds: positive.optional(),
    successThreshold: positive.optional(),
    failureThreshold: positive.optional(),
    httpGet: z
      .strictObject({
        path: text('the path')
          .refine((v) => v.startsWith('/'), { error: (i) => `a path starts with "/": ${show(i.input)}` })
          .optional(),
        port,
        host: probeHost.optional(),
        scheme: z.enum(['HTTP', 'HTTPS']).optional(),
        httpHeaders: z
          .array(
            z.strictObject({
              name: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'expected an HTTP header name'),
              value: text('the header value'),
            }),
          )
          .optional(),
      })
      .optional(),
    tcpSocket: z.strictObject({ port, host: probeHost.optional() }).optional(),
    exec: z.strictObject({ command: z.array(text('the command word')).min(1) }).optional(),
  })
  .superRefine((p, ctx) => {
    const given = (['httpGet', 'tcpSocket', 'exec'] as const).filter((k) => p[k] !== undefined);
    if (given.length !== 1) ctx.addIssue({ code: 'custom', message: `give exactly one of httpGet, tcpSocket and exec (given: ${given.join(', ') || 'none'})` });
  });
export type Probe = z.output<typeof probe>;

const notReachable = new BlockList();
notReachable.addSubnet('127.0.0.0', 8, 'ipv4');
notReachable.addAddress('0.0.0.0', 'ipv4');
notReachable.addAddress('::1', 'ipv6');
notReachable.addAddress('::', 'ipv6');

/** Why a string is not an address the mesh can reach a VM at, or undefined. */
export function workloadAddressProblem(value: string): string | undefined {
  const family = isIP(value);
  if (!isIpAddress(value)) return `not an IPv4 or IPv6 address: ${show(value)}`;
  if (notReachable.check(value, family === 4 ? 'ipv4' : 'ipv6'))
    return `${value} is a loopback or unspecified address; give the address the cluster reaches this VM at`;
  return undefined;
}

export const workloadAddress = z.string().superRefine((v, ctx) => {
  const problem = workloadAddressProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** How a resource reaches the API server: the run's cluster connection, opened on first use (given by the recipe). */
export type KubeConnect = () => Promise<KubernetesClient>;
export const kubeConnect = z.custom<KubeConnect>(
  (v) => typeof v === 'function',
  'expected the function that opens the cluster connection (cluster(ctx, attr, what).kubernetes())',
);

/**
 * The object as the run found it, when the recipe shares that read with another (the WorkloadGroup the mesh inputs read
 * too): one GET per run. Without it current() reads the object itself.
 */
export type KubeRead = () => Promise<KubeObject | undefined>;
export const kubeRead = z.custom<KubeRead>((v) => typeof v === 'function', 'expected the function that reads the object (cluster(...).object(...))');

export const presence = z.enum(['present', 'absent']).default('present');

// ---- an API object meshvm owns, as state: the value at every path meshvm sets ----

/** What every registration kind's spec has: where the object is, whether it should be, and how to reach the API. */
export interface KubeObjectSpec {
  name: string;
  namespace: string;
  ensure: 'present' | 'absent';
  connect: KubeConnect;
  read?: KubeRead | undefined;
}

/**
 * The object as read, judged for a spec: `ensure`, its uid (to delete exactly what was read), and the value at every
 * path meshvm sets (`spec.template.ports.http`, `metadata.labels["app.kubernetes.io/managed-by"]`) or set before and
 * would now remove (its server-side-apply field set). Nothing else: other managers' fields and status are not state.
 */
export type KubeObjectState = { ensure: 'present' | 'absent'; uid?: string | undefined } & { [path: string]: unknown };

type Path = readonly string[];

/** `spec.template.ports.http`, `metadata.labels["app.kubernetes.io/name"]`: how a field reads in plan and report. */
export function renderPath(path: Path): string {
  return path.map((part, i) => (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(part) ? (i === 0 ? part : `.${part}`) : `[${show(part)}]`)).join('');
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Every leaf under an object: scalars and lists are values, maps are walked; empty maps and undefined are nothing. */
export function leaves(value: unknown, path: Path = []): [Path, unknown][] {
  if (value === undefined) return [];
  if (!isMap(value)) return [[path, value]];
  return Object.entries(value).flatMap(([key, child]) => leaves(child, [...path, key]));
}

/** The parts of an object meshvm has opinions about: its labels and annotations, and its spec. */
function managedPaths(object: KubeObject): [Path, unknown][] {
  const { labels, annotations } = object.metadata;
  return [...leaves({ metadata: { labels, annotations } }), ...leaves({ spec: object.spec })];
}

function valueAt(object: unknown, path: Path): unknown {
  let here = object;
  for (const part of path) {
    if (!isMap(here)) return undefined;
    here = here[part];
  }
  return here;
}

/**
 * The leaves a field manager owns, from a managedFields entry's fieldsV1 (`{"f:spec":{"f:ports":{".":{},"f:http":{}}}}`):
 * a map is walked, a list (`k:`, `v:`, `i:` members) is one value, as in `leaves`.
 */
export function ownedLeaves(fields: unknown, path: Path = []): Path[] {
  if (!isMap(fields)) return [path];
  const members = Object.keys(fields).filter((key) => key !== '.');
  if (members.length === 0 || members.some((key) => !key.startsWith('f:'))) return [path];
  return members.flatMap((key) => ownedLeaves(fields[key], [...path, key.slice(2)]));
}

/** The paths meshvm's server-side applies own on the object, limited to labels, annotations and spec. */
export function pathsOwnedByMeshvm(object: KubeObject): Path[] {
  const entry = object.metadata.managedFields?.find((m) => m.manager === FIELD_MANAGER && m.operation === 'Apply');
  if (!entry?.fieldsV1) return [];
  return ownedLeaves(entry.fieldsV1).filter(
    ([top, second, third]) =>
      (top === 'spec' && second !== undefined) || (top === 'metadata' && (second === 'labels' || second === 'annotations') && third !== undefined),
  );
}

/** The state of `object` for the object meshvm would apply: what is there at the paths meshvm sets or owns. */
export function judgeObject(object: KubeObject, desired: KubeObject): KubeObjectState {
  const state: KubeObjectState = { ensure: 'present', uid: object.metadata.uid };
  for (const [path] of managedPaths(desired)) state[renderPath(path)] = valueAt(object, path);
  for (const path of pathsOwnedByMeshvm(object)) state[renderPath(path)] ??= valueAt(object, path);
  return state;
}

/** Equal where `want` says something: a list item may carry fields the server filled in (a Service port's defaults). */
export function matches(want: unknown, have: unknown): boolean {
  if (Array.isArray(want)) return Array.isArray(have) && have.length === want.length && want.every((w, i) => matches(w, have[i]));
  if (isMap(want)) return isMap(have) && Object.entries(want).every(([k, v]) => v === undefined || matches(v, have[k]));
  return want === have;
}

/** Field by field: a path that differs, a path meshvm owned and no longer sets (removed), or everything when absent. */
export function objectChanges(spec: KubeObjectSpec, desired: KubeObject, current: KubeObjectState | undefined): Changes<KubeObjectState> {
  const changes: Record<string, { from: unknown; to: unknown }> = {};
  if (spec.ensure === 'absent') return current ? { ensure: { from: 'present', to: 'absent' } } : {};
  if (!current) changes.ensure = { from: undefined, to: 'present' };
  const wanted = new Set<string>();
  for (const [path, want] of managedPaths(desired)) {
    const field = renderPath(path);
    wanted.add(field);
    if (!matches(want, current?.[field])) changes[field] = { from: current?.[field], to: want };
  }
  for (const [field, have] of Object.entries(current ?? {})) {
    if (field === 'ensure' || field === 'uid' || wanted.has(field) || have === undefined) continue;
    changes[field] = { from: have, to: undefined };
  }
  return changes as Changes<KubeObjectState>;
}

/** Plan and report lines: `set spec.template.ports.http to 9080 (was 8080)`, `remove ...`, `create it`, `delete it`. */
export function describeObjectChange(field: string, change: { from: unknown; to: unknown }): string {
  if (field === 'ensure') return change.to === 'absent' ? `delete it (it carries ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE})` : 'create it';
  if (change.to === undefined) return `remove ${field} (was ${show(change.from)})`;
  return change.from === undefined ? `set ${field} to ${show(change.to)}` : `set ${field} to ${show(change.to)} (was ${show(change.from)})`;
}

/** Drops undefined values and empty maps, so the object sent says only what meshvm means. */
export function prune<T>(value: T): T {
  if (Array.isArray(value)) return value.map(prune) as T;
  if (!isMap(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    const pruned = prune(child);
    if (pruned === undefined || (isMap(pruned) && Object.keys(pruned).length === 0)) continue;
    out[key] = pruned;
  }
  return out as T;
}

/** How many times this process wrote each object: part of the read's memo key, so a write outdates the read before it. */
const writesTo = new Map<string, number>();
const objectId = (api: ObjectApi, spec: { namespace: string; name: string }) => `${api.plural}:${spec.namespace}/${spec.name}`;
const objectReadKey = (api: ObjectApi, spec: { namespace: string; name: string }) =>
  `kube-object:${objectId(api, spec)}#${writesTo.get(objectId(api, spec)) ?? 0}`;

/**
 * A kind whose state is one API object meshvm owns: current() GETs it (plan makes no write), changes() diffs the paths
 * meshvm sets, apply() server-side-applies the whole object as field manager meshvm (or deletes it, only when it
 * carries meshvm's managed-by label).
 */
export function kubeObjectType<Schema extends z.ZodType<KubeObjectSpec>>(o: {
  kind: string;
  api: ObjectApi;
  schema: Schema;
  /** The object meshvm applies for a spec (labels include managed-by; no undefined, no empty maps). */
  render(spec: z.output<Schema>): KubeObject;
}): ResourceType<z.output<Schema>, KubeObjectState> & { schema: Schema } {
  type Spec = z.output<Schema>;
  const where = (spec: Spec) => `${o.api.kind} ${spec.namespace}/${spec.name}`;
  const type: ResourceType<Spec, KubeObjectState> & { schema: Schema } = {
    kind: o.kind,
    schema: o.schema as Schema & z.ZodType<z.output<Schema>>,
    key: (spec: Spec) => `${spec.namespace}/${spec.name}`,

    async current(host: HostReader, spec: Spec): Promise<KubeObjectState | undefined> {
      // once a run while nothing changed (preflight and the run read it alike), unless the spec brings its own shared read
      const read = async () => readObject(await spec.connect(), o.api, spec.namespace, spec.name);
      const object = spec.read ? await spec.read() : await host.memo(objectReadKey(o.api, spec), read);
      if (!object) return undefined;
      if (spec.ensure === 'absent') {
        if (!managedByMeshvm(object))
          throw new Error(
            `${where(spec)} exists but does not carry ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}: meshvm deletes only what it made; delete it yourself if it should go (kubectl delete ${o.api.plural} -n ${spec.namespace} ${spec.name})`,
          );
        return { ensure: 'present', uid: object.metadata.uid };
      }
      return judgeObject(object, o.render(spec));
    },

    changes: (spec: Spec, current: KubeObjectState | undefined) => objectChanges(spec, o.render(spec), current),

    /**
     * Preflight: the cluster is asked before anything on the VM changes: the object read (a delete refused when it is not
     * meshvm's) and, when it would change, the apply sent as a dry run (RBAC, admission and validation decide; nothing stored).
     */
    async prepare(host: Host, spec: Spec): Promise<string | undefined> {
      const changes = type.changes(spec, await type.current(host, spec));
      if (!hasChanges(changes) || spec.ensure === 'absent') return undefined;
      await applyObject(await spec.connect(), o.api, o.render(spec), { dryRun: true });
      return `${where(spec)}: the apply was accepted as a dry run`;
    },

    async apply(_host: Host, spec: Spec, _changes: Changes<KubeObjectState>, current: KubeObjectState | undefined): Promise<void> {
      const k = await spec.connect();
      // what was read before this write is no longer the object: the next read (a later run on the same host) asks again
      writesTo.set(objectId(o.api, spec), (writesTo.get(objectId(o.api, spec)) ?? 0) + 1);
      if (spec.ensure === 'absent') {
        await deleteObject(k, o.api, spec.namespace, spec.name, current?.uid);
        return;
      }
      await applyObject(k, o.api, o.render(spec));
    },

    describe: (field: string, change: { from: unknown; to: unknown }) => describeObjectChange(field, change),
  };
  return type;
}

/** The metadata meshvm puts on every object it makes: name, namespace, its managed-by label beside the caller's labels. */
export function ownedMetadata(spec: KubeObjectSpec, labels: Record<string, string> = {}, annotations: Record<string, string> = {}): KubeObject['metadata'] {
  return { name: spec.name, namespace: spec.namespace, labels: { ...labels, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE }, annotations };
}

// ---- WorkloadGroup ----

/** What a WorkloadEntry and a WorkloadGroup's template share (Istio's WorkloadEntry fields): identity, network, ports. */
export const entryFields = {
  serviceAccount: objectName,
  network: networkName.optional(),
  ports: portMap.default({}),
  locality: locality.optional(),
  weight: weight.optional(),
};

export const workloadGroupSpec = z.strictObject({
  name: objectName,
  namespace: dnsLabel,
  ensure: presence,
  /** spec.metadata.labels: the labels every WorkloadEntry of the group (every VM that registers with it) gets. */
  labels: labelMap.default({}),
  /** spec.metadata.annotations (e.g. proxy.istio.io/config). */
  annotations: annotationMap.default({}),
  /** spec.template: the identity, network and ports of the group's entries. */
  ...entryFields,
  /** spec.probe: the readiness probe the agent runs and reports to istiod. */
  probe: probe.optional(),
  /** Labels of the WorkloadGroup object itself (besides meshvm's managed-by). */
  objectLabels: labelMap.default({}),
  connect: kubeConnect,
  read: kubeRead.optional(),
});
export type WorkloadGroupSpec = z.output<typeof workloadGroupSpec>;

/** The WorkloadGroup meshvm applies: Istio's schema (spec.metadata, spec.template, spec.probe), managed-by meshvm. */
export function renderWorkloadGroup(spec: WorkloadGroupSpec): KubeObject {
  return prune({
    metadata: ownedMetadata(spec, spec.objectLabels),
    spec: {
      metadata: { labels: spec.labels, annotations: spec.annotations },
      template: { serviceAccount: spec.serviceAccount, network: spec.network, ports: spec.ports, locality: spec.locality, weight: spec.weight },
      probe: spec.probe,
    },
  });
}

export const workloadGroupType = kubeObjectType({ kind: 'workload_group', api: WORKLOAD_GROUPS, schema: workloadGroupSpec, render: renderWorkloadGroup });

export const WorkloadGroup = defineResource(workloadGroupType);
