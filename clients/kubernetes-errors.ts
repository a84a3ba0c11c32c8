// What a failed Kubernetes API request means: retry verdicts, and 403s turned into the RBAC rule the token lacks.
import { connectionFailure, retryAfterMs, tlsFailure, type Verdict } from './retry.ts';

/** @kubernetes/client-node's ApiException: code, body (the response text), headers. */
interface ApiExceptionLike {
  code?: unknown;
  body?: unknown;
  headers?: Record<string, string>;
}

export function httpStatus(error: unknown): number | undefined {
  const code = (error as ApiExceptionLike | undefined)?.code;
  return typeof code === 'number' && code >= 100 && code < 600 ? code : undefined;
}

/** The API server's Status object, when the body holds one. */
export interface KubeStatus {
  message?: string;
  reason?: string;
  code?: number;
  details?: { name?: string; group?: string; kind?: string; retryAfterSeconds?: number; causes?: { message?: string; field?: string }[] };
}

export function statusBody(error: unknown): KubeStatus | undefined {
  const body = (error as ApiExceptionLike | undefined)?.body;
  if (body && typeof body === 'object') return body as KubeStatus;
  if (typeof body !== 'string' || body.trim() === '') return undefined;
  try {
    const parsed = JSON.parse(body) as unknown;
    return parsed && typeof parsed === 'object' ? (parsed as KubeStatus) : undefined;
  } catch {
    return { message: body.trim() };
  }
}

export function statusMessage(error: unknown): string {
  return statusBody(error)?.message ?? (httpStatus(error) === undefined ? ((error as Error)?.message ?? String(error)) : `HTTP ${httpStatus(error)}`);
}

/** Retry on connection errors, timeouts, 5xx and 429 (Retry-After honoured up to the policy's ceiling). */
export function classifyKubernetes(error: unknown): Verdict {
  const status = httpStatus(error);
  if (status === undefined) {
    const connection = connectionFailure(error);
    return connection ? { retry: true, reason: connection } : { retry: false };
  }
  if (status === 429) {
    const afterMs = retryAfterMs((error as ApiExceptionLike).headers?.['retry-after']) ?? (statusBody(error)?.details?.retryAfterSeconds ?? 0) * 1000;
    return { retry: true, reason: `HTTP 429 ${statusMessage(error)}`, afterMs };
  }
  if (status >= 500) return { retry: true, reason: `HTTP ${status} ${statusMessage(error)}` };
  return { retry: false };
}

const FORBIDDEN = /User "([^"]+)" cannot (\S+) resource "([^"]+)" in API group "([^"]*)" (?:in the namespace "([^"]+)"|at the cluster scope)/;

/** A 403 as a sentence: who, what verb on which resource where, and the Role (or ClusterRole) rule that would allow it. */
export function explainForbidden(error: unknown): string | undefined {
  const status = statusBody(error);
  const m = FORBIDDEN.exec(status?.message ?? '');
  if (!m) return undefined;
  const [, user, verb, resource, group = '', namespace] = m;
  const name = status?.details?.name;
  const qualified = group === '' ? resource : `${resource}.${group}`;
  const target = name ? `${qualified} "${name}"` : qualified;
  const rule = `apiGroups: ["${group}"], resources: ["${resource}"], ${name ? `resourceNames: ["${name}"], ` : ''}verbs: ["${verb}"]`;
  return namespace
    ? `the token (${user}) may not ${verb} ${target} in namespace ${namespace}: grant it a Role in namespace ${namespace} with {${rule}} and a RoleBinding to ${user}`
    : `the token (${user}) may not ${verb} ${target} at the cluster scope: grant it a ClusterRole with {${rule}} and a ClusterRoleBinding to ${user}`;
}

/** The message for an error the retries did not cure: what was asked, and what to do. */
export function explainKubernetesError(error: unknown, what: string, server: string): string {
  const status = httpStatus(error);
  if (status === undefined) {
    const tls = tlsFailure(error);
    if (tls) return `${what}: the Kubernetes API at ${server}: ${tls} (the CA stored beside the token in Vault)`;
    const connection = connectionFailure(error);
    return `${what}: cannot reach the Kubernetes API at ${server}: ${connection ?? (error as Error)?.message ?? String(error)}; check the server address, the network path and the CA`;
  }
  if (status === 401)
    return `${what}: the Kubernetes API at ${server} refused the token (401 Unauthorized): it has expired or been revoked; store a fresh one where meshvm reads it (Vault)`;
  if (status === 403) return `${what}: ${explainForbidden(error) ?? statusMessage(error)}`;
  if (status === 404) return `${what}: not found (${statusMessage(error)})`;
  return `${what}: the Kubernetes API answered HTTP ${status}: ${statusMessage(error)}`;
}

/** The valid service range named by a rejected out-of-range clusterIP (REFERENCE 5.b; the wording varies by version). */
export function rangeFromProbe(message: string): string | undefined {
  return /range of valid IPs is (?:CIDR )?([0-9a-fA-F:./]+)/.exec(message)?.[1];
}

/** A Kubernetes API failure: the message says what to fix; `status` is the HTTP status if there was one. */
export class KubernetesError extends Error {
  readonly status: number | undefined;
  constructor(message: string, status: number | undefined, cause: unknown) {
    super(message, { cause });
    this.name = 'KubernetesError';
    this.status = status;
  }
}
