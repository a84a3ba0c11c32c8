// IstioToken: the workload's service-account token where the sidecar reads it, minted through a TokenRequest when missing or due.
import { z } from 'zod';
import { compareFields, defineResource, type Action, type Changes, type Expiry, type PrepareContext } from '../engine/resource.ts';
import { accountName, fileMode, guestPath } from '../engine/validate.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { secrets } from '../engine/secrets.ts';
import { fixOwnership } from './ownership.ts';
import { formatModeField, ownedPathRequires } from './fields.ts';

/** The payload of a JWT (not verified: only to know when our own token expires and whom it is for). */
export function jwtClaims(token: string): { sub?: string; aud?: string | string[]; exp?: number } | undefined {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

/** What mints a token: a TokenRequest through the run's cluster connection (given by the recipe, called only on converge). */
export type TokenMinter = (request: {
  namespace: string;
  serviceAccount: string;
  audiences: string[];
  expirationSeconds: number;
}) => Promise<{ token: string; expiresAt: Date }>;

export const istioTokenSpec = z.strictObject({
  path: guestPath.default('/var/run/secrets/tokens/istio-token'),
  /** Whose token: the workload's namespace and service account. */
  namespace: z.string().min(1),
  serviceAccount: z.string().min(1),
  audiences: z.array(z.string().min(1)).min(1).default(['istio-ca']),
  /** How long a minted token lives (a TokenRequest asks at least 600 s). */
  expirationSeconds: z.number().int().min(600, 'a TokenRequest must ask for at least 600 seconds').default(43_200),
  /** A token expiring sooner than this is minted again. */
  renewBeforeSeconds: z.number().int().min(0).default(21_600),
  mode: fileMode.default(0o600),
  owner: accountName.optional(),
  group: accountName.optional(),
  mint: z.custom<TokenMinter>((v) => typeof v === 'function', 'expected the function that mints a token'),
});
export type IstioTokenSpec = z.output<typeof istioTokenSpec>;

/** The token on disk as judged for this spec; its text is never part of the state. */
export interface IstioTokenState {
  ensure: 'present';
  /** valid, or why it must be minted again. */
  token: 'valid' | 'due for renewal' | 'expired' | 'for another service account' | 'for other audiences' | 'not a token';
  expiresAt: string | undefined;
  mode: number;
  owner: string;
  group: string;
}

const subjectOf = (spec: Pick<IstioTokenSpec, 'namespace' | 'serviceAccount'>) => `system:serviceaccount:${spec.namespace}:${spec.serviceAccount}`;

function judge(text: string, spec: IstioTokenSpec, now: number): Pick<IstioTokenState, 'token' | 'expiresAt'> {
  const claims = jwtClaims(text.trim());
  if (!claims || typeof claims.exp !== 'number') return { token: 'not a token', expiresAt: undefined };
  const expiresAt = new Date(claims.exp * 1000).toISOString();
  const audiences = [claims.aud ?? []].flat();
  if (claims.sub !== subjectOf(spec)) return { token: 'for another service account', expiresAt };
  if (!spec.audiences.every((a) => audiences.includes(a))) return { token: 'for other audiences', expiresAt };
  if (claims.exp * 1000 <= now) return { token: 'expired', expiresAt };
  if (claims.exp * 1000 - now <= spec.renewBeforeSeconds * 1000) return { token: 'due for renewal', expiresAt };
  return { token: 'valid', expiresAt };
}

function hours(seconds: number): string {
  return seconds % 3600 === 0 ? `${seconds / 3600} h` : `${Math.round(seconds / 60)} min`;
}

export const istioTokenType = {
  kind: 'istio_token',
  schema: istioTokenSpec,
  key: (spec: IstioTokenSpec) => spec.path,
  requires: ownedPathRequires,
  format: formatModeField,

  /** The token's own exp claim, read from the file (the text is never kept). */
  async expiry(host: HostReader, spec: IstioTokenSpec): Promise<Expiry | undefined> {
    const exp = jwtClaims(((await host.readFile(spec.path)) ?? '').trim())?.exp;
    return typeof exp === 'number' ? { what: 'token', at: new Date(exp * 1000) } : undefined;
  },

  /** Minting again because the token is near its end (or past it) is the schedule, not drift. */
  renewal: (changes: Changes<IstioTokenState>) =>
    Object.keys(changes).length === 1 && (changes.token?.from === 'due for renewal' || changes.token?.from === 'expired'),

  async current(host: HostReader, spec: IstioTokenSpec): Promise<IstioTokenState | undefined> {
    const stat = await host.stat(spec.path);
    if (!stat) return undefined;
    if (stat.type !== 'file') throw new Error(`${spec.path} is a ${stat.type}, not a file; move it away`);
    const text = (await host.readFile(spec.path)) ?? '';
    secrets.add(text.trim());
    return { ensure: 'present', ...judge(text, spec, Date.now()), mode: stat.mode, owner: stat.owner, group: stat.group };
  },

  changes(spec: IstioTokenSpec, current: IstioTokenState | undefined): Changes<IstioTokenState> {
    if (!current) return { ensure: { from: undefined, to: 'present' } };
    const changes = compareFields({ ...spec, token: 'valid' as const }, current, ['token', 'mode', 'owner', 'group']);
    return changes;
  },

  describe(field: string, change: { from: unknown; to: unknown }): string | undefined {
    if (field === 'ensure') return 'no token yet';
    if (field === 'token') return `the token is ${String(change.from)}`;
    return undefined;
  },

  /**
   * Preflight (converge): the TokenRequest made before anything changes, so a refusal (RBAC, no such service account)
   * changes nothing; the action writes this very token. plan asks for no token.
   */
  async prepare(host: Host, spec: IstioTokenSpec, context: PrepareContext): Promise<string | undefined> {
    const changes = istioTokenType.changes(spec, await istioTokenType.current(host, spec));
    if (!changes.ensure && !changes.token) return undefined;
    if (context.mode === 'plan') return `no token asked for in plan (converge makes the TokenRequest in its preflight)`;
    await mintOnce(spec);
    return `a token for ${spec.namespace}/${spec.serviceAccount} minted, written once the run gets here`;
  },

  /** Owner and mode repaired in place when the token itself is still good. */
  async apply(host: Host, spec: IstioTokenSpec, changes: Changes<IstioTokenState>): Promise<void> {
    if (changes.ensure || changes.token) return; // the mint writes it whole
    await fixOwnership(host, spec.path, spec, changes);
  },

  /** A TokenRequest when there is no good token: plan says so, and only converge asks the API server. */
  actions(spec: IstioTokenSpec, _current: IstioTokenState | undefined, changes: Changes<IstioTokenState>): Action[] {
    if (!changes.ensure && !changes.token) return [];
    return [
      {
        action: `mint a token for ${spec.namespace}/${spec.serviceAccount} (audience ${spec.audiences.join(', ')}), expires in ${hours(spec.expirationSeconds)}`,
        async run(host: Host) {
          const { token } = await mintOnce(spec);
          secrets.add(token);
          // owner and mode set before the content lands; no backup of a secret
          await host.writeFile(spec.path, token + '\n', { mode: spec.mode, owner: spec.owner, group: spec.group, backup: false, sensitive: true });
        },
      },
    ];
  },
};

/** One TokenRequest per declaration a run, whether preflight or the action asks first. */
const minted = new WeakMap<IstioTokenSpec, ReturnType<IstioTokenSpec['mint']>>();
function mintOnce(spec: IstioTokenSpec): ReturnType<IstioTokenSpec['mint']> {
  let pending = minted.get(spec);
  if (!pending) {
    const request = {
      namespace: spec.namespace,
      serviceAccount: spec.serviceAccount,
      audiences: [...spec.audiences],
      expirationSeconds: spec.expirationSeconds,
    };
    pending = spec.mint(request);
    minted.set(spec, pending);
  }
  return pending;
}

export const IstioToken = defineResource(istioTokenType);
