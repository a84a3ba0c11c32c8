// The Route53 client of a resource: read one record set, UPSERT a batch per hosted zone, wait (bounded) for INSYNC.
import { ChangeResourceRecordSetsCommand, ListResourceRecordSetsCommand, Route53Client, waitUntilResourceRecordSetsChanged } from '@aws-sdk/client-route-53';
import type { ResourceRecordSet } from '@aws-sdk/client-route-53';
import { Agent } from 'node:https';
import { apiCalls } from '../engine/api-calls.ts';
import { resolveCredentials, type AwsCredentialSource } from './aws-iam.ts';
import { InsecureTlsError, refuseInsecureTlsEnvironment } from './tls.ts';
import { normalizeName } from './dns-check.ts';

export { normalizeName } from './dns-check.ts';

export interface Route53Options {
  /** Route53 is global: us-east-1 signs for it. */
  region?: string;
  /** A custom endpoint (tests: the stand-in). */
  endpoint?: string;
  /** Static credentials or a provider; default the SDK's Node chain (environment, then the instance role). */
  credentials?: AwsCredentialSource;
  /** SDK standard retry: attempts in all (default 6), with backoff and jitter on Throttling, PriorRequestNotComplete, 5xx, resets. */
  maxAttempts?: number;
  timeoutSeconds?: number;
  /** Where NODE_TLS_REJECT_UNAUTHORIZED (refused when "0") is looked up. Default process.env. */
  env?: Record<string, string | undefined>;
}

/** A record set as meshvm compares it: values or an alias target. */
export interface RecordData {
  ttl?: number;
  values?: string[];
  alias?: { hostedZoneId: string; dnsName: string; evaluateTargetHealth: boolean };
}

export interface RecordChange extends RecordData {
  name: string;
  type: string;
}

export class Route53Records {
  readonly #client: Route53Client;

  constructor(options: Route53Options = {}) {
    refuseInsecureTlsEnvironment('Route53', options.env);
    // the SDK takes its endpoint from these variables when none is given: one in clear would send signed requests unverified
    if (!options.endpoint) {
      const env = options.env ?? process.env;
      for (const name of ['AWS_ENDPOINT_URL_ROUTE_53', 'AWS_ENDPOINT_URL']) {
        if (env[name]?.trim().toLowerCase().startsWith('http:')) {
          throw new InsecureTlsError(`Route53: refusing the endpoint ${name}=${env[name]} from the environment: it is plain http; unset it (or give https://)`);
        }
      }
    }
    const source = options.credentials;
    this.#client = new Route53Client({
      region: options.region ?? 'us-east-1',
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(source ? { credentials: () => resolveCredentials(source) } : {}),
      // The SDK's own retry, not a second one: "standard" mode waits a full-jitter random delay up to 2^n x 1 s on
      // Throttling (50 ms otherwise, 20 s at most), never less than a Retry-After hint, and stops early when its
      // per-client retry quota runs dry. Pinned here so that AWS_RETRY_MODE or ~/.aws/config cannot switch it to the
      // "adaptive" client-side rate limiter, whose learned rate would die with each one-shot run anyway.
      retryMode: 'standard',
      maxAttempts: options.maxAttempts ?? 6,
      // rejectUnauthorized set, so that no environment variable decides whether certificates are checked
      requestHandler: {
        requestTimeout: (options.timeoutSeconds ?? 10) * 1000,
        connectionTimeout: 5000,
        httpsAgent: new Agent({ keepAlive: true, rejectUnauthorized: true }),
      },
    });
    // Inside the retry loop: one count per HTTP request sent, retries included.
    this.#client.middlewareStack.add(
      (next) => (args) => {
        apiCalls.count('route53');
        return next(args);
      },
      { step: 'deserialize', name: 'meshvmCountApiCalls' },
    );
  }

  /** The record set with exactly this name and type, or undefined (one ListResourceRecordSets, MaxItems 1). */
  async read(zoneId: string, name: string, type: string): Promise<RecordData | undefined> {
    const fqdn = absolute(name);
    const out = await this.#send(`listing ${fqdn} ${type} in hosted zone ${zoneId}`, () =>
      this.#client.send(
        new ListResourceRecordSetsCommand({
          HostedZoneId: zoneId,
          StartRecordName: fqdn,
          StartRecordType: type as never,
          MaxItems: 1,
        }),
      ),
    );
    const found = out.ResourceRecordSets?.[0];
    if (!found || normalizeName(found.Name ?? '') !== normalizeName(fqdn) || found.Type !== type || found.SetIdentifier !== undefined) return undefined;
    return fromSdk(found);
  }

  /** UPSERTs every record in one ChangeBatch (transactional: all or none); returns the change id. */
  async upsert(zoneId: string, records: readonly RecordChange[], comment = 'meshvm'): Promise<{ id: string; status: string }> {
    const out = await this.#send(`changing ${records.length} record set(s) in hosted zone ${zoneId}`, () =>
      this.#client.send(
        new ChangeResourceRecordSetsCommand({
          HostedZoneId: zoneId,
          ChangeBatch: { Comment: comment, Changes: records.map((r) => ({ Action: 'UPSERT' as const, ResourceRecordSet: toSdk(r) })) },
        }),
      ),
    );
    return { id: out.ChangeInfo?.Id ?? '', status: out.ChangeInfo?.Status ?? 'PENDING' };
  }

  /** Polls GetChange until INSYNC, at most maxSeconds (the SDK waiter; its polls count as API calls). */
  async waitInsync(changeId: string, o: { maxSeconds: number; pollSeconds: number }): Promise<void> {
    try {
      await waitUntilResourceRecordSetsChanged(
        { client: this.#client, maxWaitTime: o.maxSeconds, minDelay: o.pollSeconds, maxDelay: Math.max(o.pollSeconds, o.pollSeconds * 4) },
        { Id: changeId },
      );
    } catch (error) {
      throw new Error(
        `Route53 change ${changeId} was not INSYNC within ${o.maxSeconds} s (${(error as Error).message.split('\n')[0]}); it was accepted and will finish propagating on its own`,
        { cause: error },
      );
    }
  }

  close(): void {
    this.#client.destroy();
  }

  async #send<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw new Error(explainRoute53Error(error, what), { cause: error });
    }
  }
}

function explainRoute53Error(error: unknown, what: string): string {
  const e = error as { name?: string; message?: string; $metadata?: { httpStatusCode?: number; attempts?: number } };
  const code = e.name ?? 'Error';
  const attempts = e.$metadata?.attempts && e.$metadata.attempts > 1 ? ` (after ${e.$metadata.attempts} attempts)` : '';
  const base = `Route53: ${what}: ${code}: ${e.message ?? String(error)}${attempts}`;
  if (code === 'AccessDenied' || code === 'AccessDeniedException') {
    const actions = what.startsWith('listing')
      ? 'route53:ListResourceRecordSets (all that mode check needs)'
      : 'route53:ChangeResourceRecordSets (and route53:GetChange to wait for INSYNC), or set mode check when something else owns these records';
    return `${base}; grant the instance role ${actions} on this hosted zone`;
  }
  if (code === 'NoSuchHostedZone') return `${base}; check the hosted zone id`;
  if (code === 'Throttling' || code === 'PriorRequestNotComplete') return `${base}; Route53 kept refusing: run again later`;
  return base;
}

const absolute = (name: string): string => (name.endsWith('.') ? name : `${name}.`);

function fromSdk(r: ResourceRecordSet): RecordData {
  if (r.AliasTarget) {
    return {
      alias: {
        hostedZoneId: r.AliasTarget.HostedZoneId ?? '',
        dnsName: normalizeName(r.AliasTarget.DNSName ?? ''),
        evaluateTargetHealth: r.AliasTarget.EvaluateTargetHealth ?? false,
      },
    };
  }
  return { ...(r.TTL === undefined ? {} : { ttl: r.TTL }), values: (r.ResourceRecords ?? []).map((v) => v.Value ?? '') };
}

function toSdk(r: RecordChange): ResourceRecordSet {
  if (r.alias) {
    return {
      Name: absolute(r.name),
      Type: r.type as never,
      AliasTarget: { HostedZoneId: r.alias.hostedZoneId, DNSName: r.alias.dnsName, EvaluateTargetHealth: r.alias.evaluateTargetHealth },
    };
  }
  return { Name: absolute(r.name), Type: r.type as never, TTL: r.ttl ?? 60, ResourceRecords: (r.values ?? []).map((Value) => ({ Value })) };
}
