// What a failed Vault request means and what to do about it: retry verdicts and messages that name the fix.
import { connectionFailure, retryAfterMs, tlsFailure, type Verdict } from './retry.ts';

/** node-vault's ApiResponseError, or axios' error for a connection failure. */
interface VaultResponseError {
  message?: string;
  response?: { statusCode?: number; body?: { errors?: unknown[] } & Record<string, unknown>; headers?: Record<string, unknown> };
}

export function statusOf(error: unknown): number | undefined {
  const status = (error as VaultResponseError | undefined)?.response?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** Vault's own words: the errors[] of the response, joined. */
export function vaultSaid(error: unknown): string {
  const errors = (error as VaultResponseError | undefined)?.response?.body?.errors;
  if (Array.isArray(errors) && errors.length > 0)
    return errors
      .map((e) =>
        String(e)
          .replace(/^\d+ errors? occurred:\s*/, '')
          .replace(/\s*\n\t\* /g, '; ')
          .replace(/^\* /, '')
          .trim(),
      )
      .join('; ');
  return (error as Error | undefined)?.message ?? String(error);
}

export function isSealed(error: unknown): boolean {
  return statusOf(error) === 503 && /sealed/i.test(vaultSaid(error));
}

/** The token sent was refused as unknown, revoked or expired (not merely lacking a policy). */
export function isInvalidToken(error: unknown): boolean {
  return statusOf(error) === 403 && /invalid token/i.test(vaultSaid(error));
}

/** Retry on connection errors, timeouts, 5xx (a sealed Vault answers 503) and 429; never on other 4xx. */
export function classifyVault(error: unknown): Verdict {
  const connection = connectionFailure(error);
  if (connection && statusOf(error) === undefined) return { retry: true, reason: connection };
  const status = statusOf(error);
  if (status === undefined) return { retry: false };
  if (isSealed(error)) return { retry: true, reason: 'Vault is sealed' };
  if (status === 429) {
    const afterMs = retryAfterMs((error as VaultResponseError).response?.headers?.['retry-after']);
    return afterMs === undefined ? { retry: true, reason: `HTTP 429: ${vaultSaid(error)}` } : { retry: true, reason: `HTTP 429: ${vaultSaid(error)}`, afterMs };
  }
  if (status >= 500) return { retry: true, reason: `HTTP ${status}: ${vaultSaid(error)}` };
  return { retry: false };
}

export interface VaultContext {
  address: string;
  namespace: string | undefined;
}

const where = (c: VaultContext): string => `Vault at ${c.address}${c.namespace ? ` (namespace ${c.namespace})` : ''}`;

/** The capability a request needs, as a policy names it. */
function capability(method: string): string {
  return method === 'GET' ? 'read' : method === 'LIST' ? 'list' : method === 'DELETE' ? 'delete' : 'update';
}

/** A message that says what failed and what to change, for an error the retries did not cure. */
export function explainVaultError(error: unknown, c: VaultContext, request: { method: string; path: string; what: string }): string {
  const status = statusOf(error);
  const said = vaultSaid(error);
  const at = where(c);
  if (isSealed(error)) return `${request.what}: ${at} is sealed: unseal it (vault operator unseal) or point meshvm at an unsealed node, then re-run`;
  if (status === undefined) {
    const tls = tlsFailure(error);
    if (tls) return `${request.what}: ${at}: ${tls} (caFile)`;
    const connection = connectionFailure(error);
    return `${request.what}: cannot reach ${at}: ${connection ?? said}; check the address, the network path and (for https) the CA file`;
  }
  if (isInvalidToken(error)) return `${request.what}: ${at} refused the token as invalid or expired (403 ${said}): give meshvm a fresh token`;
  if (status === 403) {
    return (
      `${request.what}: ${at} denied ${request.method} ${request.path} (403 permission denied): the token's policy lacks ` +
      `path "${request.path}" { capabilities = ["${capability(request.method)}"] }; add it to the policy of the role meshvm logs in with`
    );
  }
  if (status === 404) return `${request.what}: ${at} has nothing at ${request.path} (404${said && said !== 'Status 404' ? `: ${said}` : ''})`;
  if (status === 429) return `${request.what}: ${at} keeps rate-limiting ${request.path} (429 ${said}); raise the rate limit quota or run later`;
  return `${request.what}: ${at} answered ${request.method} ${request.path} with HTTP ${status}: ${said}`;
}

/** A login refusal explained: which role, which mount, and what to check. */
export function explainLoginError(error: unknown, c: VaultContext, login: { method: string; mount: string; role?: string; files?: string }): string {
  const said = vaultSaid(error);
  const status = statusOf(error);
  const what = `Vault ${login.method} login at auth/${login.mount}`;
  if (status === undefined || isSealed(error) || status >= 500 || status === 429)
    return explainVaultError(error, c, { method: 'POST', path: `auth/${login.mount}/login`, what });
  if (/role .*not found|does not exist|entry for role/i.test(said)) {
    return `${what}: ${where(c)} has no role "${login.role}" (${said}): check auth.role in the runlist, or create the role at auth/${login.mount}/role/${login.role}`;
  }
  if (/does not belong to the role/i.test(said)) return `${what}: ${said}: add this instance's IAM role to the Vault role's bound_iam_principal_arn`;
  if (/invalid role or secret id|invalid secret id|invalid role id/i.test(said)) {
    return `${what}: ${where(c)} refused the role_id/secret_id read from ${login.files} (${said}): the secret_id may be expired, used up or rotated; write a fresh one`;
  }
  if (/X-Vault-AWS-IAM-Server-ID/i.test(said)) return `${what}: ${said}: set auth.serverIdHeader to the iam_server_id_header_value of Vault's AWS auth config`;
  if (/STS|signature|InvalidClientTokenId|credential/i.test(said))
    return `${what}: STS did not accept the signed GetCallerIdentity (${said}): check the instance role credentials, the clock, and auth.region against Vault's sts_region`;
  if (status === 404) return `${what}: ${where(c)} has no auth method mounted at auth/${login.mount} (${said}): check auth.mount`;
  return `${what}: ${where(c)} refused the login (HTTP ${status}: ${said})`;
}
