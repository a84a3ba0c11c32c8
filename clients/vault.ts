// The Vault client of a run: one login (AWS IAM, AppRole or a given token), KV v2 reads, Kubernetes creds, revoke at close.
import fs from 'node:fs/promises';
import './no-debug.ts'; // before the libraries that would print requests
import nodeVault from 'node-vault';
import { apiCalls } from '../engine/api-calls.ts';
import type { Host } from '../engine/host.ts';
import { InputError, errorMessage } from '../engine/errors.ts';
import { secrets } from '../engine/secrets.ts';
import { iamLoginBody, resolveCredentials, type AwsCredentialSource } from './aws-iam.ts';
import { RetriesExhausted, withRetry } from './retry.ts';
import { refuseInsecureTlsEnvironment } from './tls.ts';
import { classifyVault, explainLoginError, explainVaultError, isInvalidToken, statusOf, type VaultContext } from './vault-errors.ts';
import { kubernetesAccessSource, vaultConfig, type KubernetesAccessSourceInput, type VaultConfig, type VaultConfigInput } from './vault-config.ts';

export { vaultConfig, kubernetesAccessSource } from './vault-config.ts';
export type { VaultConfig, VaultConfigInput, KubernetesAccessSource, KubernetesAccessSourceInput } from './vault-config.ts';

export interface VaultClientOptions {
  /** Reads the CA, role_id, secret_id and token files (recipes pass the host's reader so --root applies). Default: node:fs. */
  readFile?: (path: string) => Promise<string | undefined>;
  /** AWS credentials for IAM login; default the Node provider chain (environment, then the instance role). */
  awsCredentials?: AwsCredentialSource;
  /** Where VAULT_TOKEN (token auth) and NODE_TLS_REJECT_UNAUTHORIZED (refused) are looked up. Default process.env. */
  env?: Record<string, string | undefined>;
  /**
   * A wrapped secret_id (auth.wrappedSecretIdFile) is unwrapped, once, only when this is given: it keeps the secret_id in
   * auth.secretIdFile and removes the wrapped file (plan does not give it: an unwrap cannot be undone).
   */
  unwrap?: SecretIdStore;
  /** Where the warning of an insecure (http://) Vault goes, on every run. Default stderr. */
  warn?: (text: string) => void;
}

/** How the unwrapped secret_id is kept (recipes give the run's Host: hostSecretIdStore). */
export interface SecretIdStore {
  /** Writes the file whole, mode 0600, or not at all. */
  write(file: string, secret: string): Promise<void>;
  remove(file: string): Promise<void>;
}

/**
 * The secret_id kept through a Host (engine/host.ts): an atomic 0600 write (fsync, rename) and a removal, each reaching
 * its path by the safe path walk, so a link in the root never leads them out of it; no backup of a secret is kept.
 */
export function hostSecretIdStore(host: Pick<Host, 'writeFile' | 'remove'>): SecretIdStore {
  return {
    write: (file, secret) => host.writeFile(file, `${secret}\n`, { mode: 0o600, sensitive: true }),
    remove: (file) => host.remove(file),
  };
}

export interface KvSecret {
  data: Record<string, unknown>;
  version: number;
}

/** What the Kubernetes client needs: the API server, its CA, and a scoped bearer token. */
export interface KubernetesAccess {
  server: string;
  caPem: string;
  token: string;
  /** Set when the token was minted by the Kubernetes secrets engine (its lease end). */
  tokenExpiresAt?: Date;
}

export interface MintedServiceAccountToken {
  token: string;
  serviceAccount: string;
  namespace: string;
  leaseId: string;
  expiresAt: Date;
}

type NodeVaultClient = ReturnType<typeof nodeVault>;

export class VaultClient {
  readonly config: VaultConfig;
  readonly #options: VaultClientOptions;
  readonly #context: VaultContext;
  #client: Promise<NodeVaultClient> | undefined;
  #login: Promise<void> | undefined;
  /** True when the token came from a login of this run (so it is ours to revoke). */
  #ownsToken = false;
  /** When the login token ends (its lease_duration), when this run logged in. */
  #tokenExpiresAt: Date | undefined;
  #loginToken: string | undefined;
  #closed = false;
  /** Why the revoke at close failed, if it did (close never throws: the run's outcome is already decided). */
  closeError: string | undefined;

  constructor(config: VaultConfigInput, options: VaultClientOptions = {}) {
    const parsed = vaultConfig.safeParse(config);
    if (!parsed.success) throw new InputError('vault', parsed.error.issues.map((i) => `${i.path.join('.') || '(config)'}: ${i.message}`).join('; '));
    this.config = parsed.data;
    this.#options = options;
    this.#context = { address: this.config.address, namespace: this.config.namespace };
    refuseInsecureTlsEnvironment('Vault', options.env);
    if (this.config.insecure && this.config.address.startsWith('http:')) {
      (options.warn ?? ((text) => process.stderr.write(`warning: ${text}\n`)))(
        `Vault at ${this.config.address} is reached over plain http (insecure: true): the login secret and the tokens travel in clear`,
      );
    }
  }

  /** Logs in once per run (also done implicitly by the first read). */
  async login(): Promise<void> {
    this.#login ??= this.#doLogin().catch((error: unknown) => {
      this.#login = undefined;
      throw error;
    });
    return this.#login;
  }

  /** Reads a KV v2 secret (GET <mount>/data/<path>). The values of the keys listed in `secret` are registered as secrets (masked in every output). */
  async readKv(path: string, options: { mount?: string; version?: number; secret?: readonly string[] } = {}): Promise<KvSecret> {
    const apiPath = `${options.mount ?? 'secret'}/data/${path.replace(/^\/+/, '')}${options.version ? `?version=${options.version}` : ''}`;
    const response = await this.#call('GET', apiPath, `reading the KV v2 secret ${apiPath}`, (v) => v.read(apiPath), {
      notFound: (said) =>
        `no KV v2 secret at ${apiPath} (the full API path${this.config.namespace ? ` in namespace ${this.config.namespace}` : ''})${said}: ` +
        `store it with \`vault kv put -mount=${options.mount ?? 'secret'} ${path} ...\` or fix the path`,
    });
    const data = (response?.data?.data ?? undefined) as Record<string, unknown> | null | undefined;
    if (!data || typeof data !== 'object') throw new Error(`Vault returned no data for ${apiPath} (is the mount KV version 2?)`);
    for (const key of options.secret ?? []) secrets.add(data[key]);
    return { data, version: Number(response.data?.metadata?.version ?? 0) };
  }

  /** Mints a service-account token from Vault's Kubernetes secrets engine (POST <mount>/creds/<role>). */
  async mintKubernetesToken(o: {
    role: string;
    namespace: string;
    ttlSeconds?: number;
    audiences?: readonly string[];
    mount?: string;
  }): Promise<MintedServiceAccountToken> {
    const apiPath = `${o.mount ?? 'kubernetes'}/creds/${o.role}`;
    const body: Record<string, unknown> = { kubernetes_namespace: o.namespace, ttl: `${o.ttlSeconds ?? 1200}s` };
    if (o.audiences) body['audiences'] = [...o.audiences];
    const response = await this.#call('POST', apiPath, `minting a Kubernetes token from ${apiPath}`, (v) => v.write(apiPath, body), {
      notFound: (said) => `no Kubernetes secrets engine role at ${apiPath}${said}: check the mount and role name`,
    });
    const token = response?.data?.service_account_token;
    if (typeof token !== 'string' || token === '') throw new Error(`Vault returned no service_account_token from ${apiPath}`);
    secrets.add(token);
    return {
      token,
      serviceAccount: String(response.data.service_account_name ?? ''),
      namespace: String(response.data.service_account_namespace ?? o.namespace),
      leaseId: String(response.lease_id ?? ''),
      expiresAt: new Date(Date.now() + Number(response.lease_duration ?? 0) * 1000),
    };
  }

  /** The API server, CA and scoped token as the operator stored them in KV (the token optionally minted by the secrets engine). */
  async kubernetesAccess(source: KubernetesAccessSourceInput): Promise<KubernetesAccess> {
    const s = kubernetesAccessSource.parse(source);
    const { kv } = s;
    const secret = await this.readKv(kv.path, { mount: kv.mount, secret: [kv.tokenKey] });
    const field = (key: string, needed: boolean): string | undefined => {
      const value = secret.data[key];
      if (typeof value === 'string' && value !== '') return value;
      if (!needed) return undefined;
      throw new Error(
        `the KV v2 secret ${kv.mount}/data/${kv.path} has no "${key}" (it has: ${Object.keys(secret.data).join(', ') || 'nothing'}); store it there`,
      );
    };
    const server = field(kv.serverKey, true)!;
    const caPem = field(kv.caKey, true)!;
    if (!s.creds) return { server, caPem, token: field(kv.tokenKey, true)! };
    const minted = await this.mintKubernetesToken({ ...s.creds, ...(s.creds.audiences ? { audiences: s.creds.audiences } : {}) });
    return { server, caPem, token: minted.token, tokenExpiresAt: minted.expiresAt };
  }

  /** Uses a token kept from an earlier run (access-cache.ts) instead of logging in: no call until a request needs one; not revoked at close. */
  adoptToken(token: string): void {
    secrets.add(token);
    this.#login = this.#nodeVault().then((client) => {
      client.token = token;
    });
  }

  /** The login token of this run and its end (still revoked at close unless keepToken hands it over); undefined when the run did not log in. */
  loginToken(): { token: string; expiresAt: Date | undefined } | undefined {
    if (!this.#ownsToken || !this.#loginToken) return undefined;
    return { token: this.#loginToken, expiresAt: this.#tokenExpiresAt };
  }

  /** Hands the login token over to be kept (so close no longer revokes it); undefined when the run did not log in. */
  keepToken(): { token: string; expiresAt: Date | undefined } | undefined {
    const login = this.loginToken();
    if (login) this.#ownsToken = false;
    return login;
  }

  /** Revokes the token in use, ours or adopted (offboarding a kept access: its leases go with it); never throws. */
  async revoke(): Promise<void> {
    if (!this.#client) return;
    await this.#login?.catch(() => undefined);
    this.#ownsToken = true;
    this.#closed = false;
    await this.close();
  }

  /** Revokes the token this run logged in with (never one the operator gave); never throws. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#ownsToken || !this.#client) return;
    const client = await this.#client;
    try {
      await withRetry("revoking the run's Vault token", this.config.retry, classifyVault, () => client.tokenRevokeSelf());
    } catch (error) {
      this.closeError = `could not revoke the run's Vault token (it expires at its TTL): ${errorMessage(error)}`;
    } finally {
      this.#ownsToken = false;
      client.token = '';
    }
  }

  async #nodeVault(): Promise<NodeVaultClient> {
    this.#client ??= (async () => {
      const ca = this.config.caFile === undefined ? undefined : await this.#read(this.config.caFile, 'Vault CA file (caFile)');
      // strictSSL given explicitly: node-vault would otherwise turn verification off when VAULT_SKIP_VERIFY has any value;
      // its debug output (DEBUG=node-vault) would print request bodies, a secret_id among them: never on
      const client = nodeVault({
        endpoint: this.config.address,
        debug: () => undefined,
        ...(this.config.namespace ? { namespace: this.config.namespace } : {}),
        requestOptions: { timeout: this.config.timeoutSeconds * 1000, strictSSL: true, ...(ca ? { ca } : {}) },
      });
      client.token = ''; // never fall back to VAULT_TOKEN unless token auth says so
      // nor to VAULT_NAMESPACE or VAULT_PREFIX: where requests go is the runlist's to say
      Object.assign(client, { namespace: this.config.namespace ?? '', pathPrefix: '' });
      const request = client.request.bind(client);
      client.request = (options) => {
        apiCalls.count('vault');
        return request(options);
      };
      return client;
    })();
    return this.#client;
  }

  async #doLogin(): Promise<void> {
    const client = await this.#nodeVault();
    const { auth } = this.config;
    if (auth.method === 'token') {
      const token = auth.file ? await this.#read(auth.file, 'Vault token file (auth.file)') : (this.#options.env ?? process.env)['VAULT_TOKEN']?.trim();
      if (!token) throw new InputError('vault.auth', 'token auth needs auth.file or the VAULT_TOKEN environment variable, and neither gives a token');
      secrets.add(token);
      client.token = token;
      return;
    }
    let login: () => Promise<unknown>;
    let files: string | undefined;
    if (auth.method === 'approle') {
      const roleId = await this.#read(auth.roleIdFile, 'AppRole role_id file (auth.roleIdFile)');
      const secretId = (await this.#unwrapSecretId(client)) ?? (await this.#read(auth.secretIdFile, 'AppRole secret_id file (auth.secretIdFile)'));
      secrets.add(secretId);
      files = `${auth.roleIdFile} and ${auth.secretIdFile}`;
      login = () => client.approleLogin({ mount_point: auth.mount, role_id: roleId, secret_id: secretId });
    } else {
      const credentials = await resolveCredentials(this.#options.awsCredentials);
      login = async () =>
        client.awsIamLogin({
          mount_point: auth.mount,
          ...(await iamLoginBody({ role: auth.role, region: auth.region, serverIdHeader: auth.serverIdHeader, credentials })),
        });
    }
    try {
      const response = (await withRetry(`Vault ${auth.method} login`, this.config.retry, classifyVault, login)) as { auth?: { client_token?: string } };
      const token = response.auth?.client_token;
      if (!token) throw new Error(`Vault ${auth.method} login at auth/${auth.mount} returned no client_token`);
      secrets.add(token);
      client.token = token;
      this.#ownsToken = true;
      this.#loginToken = token;
      const seconds = Number((response.auth as { lease_duration?: unknown }).lease_duration);
      this.#tokenExpiresAt = Number.isFinite(seconds) && seconds > 0 ? new Date(Date.now() + seconds * 1000) : undefined;
    } catch (error) {
      const cause = error instanceof RetriesExhausted ? error.cause : error;
      const info = { method: auth.method, mount: auth.mount, ...(auth.method === 'aws' ? { role: auth.role } : {}), ...(files ? { files } : {}) };
      throw new Error(explainLoginError(cause, this.#context, info) + retriedNote(error), { cause });
    }
  }

  /**
   * The secret_id of a response-wrapping token left in auth.wrappedSecretIdFile (cloud-init's user-data): unwrapped once
   * (single use: nobody else can have read it if this succeeds), kept in auth.secretIdFile, the wrapped file removed.
   * undefined when there is no wrapped file.
   */
  async #unwrapSecretId(client: NodeVaultClient): Promise<string | undefined> {
    const { auth } = this.config;
    if (auth.method !== 'approle' || auth.wrappedSecretIdFile === undefined) return undefined;
    const file = auth.wrappedSecretIdFile;
    const exists = this.#options.readFile
      ? (await this.#options.readFile(file)) !== undefined
      : await fs.stat(file).then(
          () => true,
          () => false,
        );
    if (!exists) return undefined;
    const wrappingToken = await this.#read(file, 'wrapped secret_id file (auth.wrappedSecretIdFile)');
    secrets.add(wrappingToken);
    if (!this.#options.unwrap) {
      throw new InputError(
        'vault.auth.wrappedSecretIdFile',
        `${file} holds a wrapped secret_id, which can be unwrapped only once: a converge unwraps it (plan does not)`,
      );
    }
    let secretId: unknown;
    try {
      // the wrapping token is the request's token: nothing in the body (Vault would look the token up as already used)
      const unwrap = () => client.write('sys/wrapping/unwrap', {}, { headers: { 'X-Vault-Token': wrappingToken } });
      secretId = (await withRetry(`unwrapping the secret_id in ${file}`, this.config.retry, classifyVault, unwrap))?.data?.secret_id;
    } catch (error) {
      const cause = error instanceof RetriesExhausted ? error.cause : error;
      if (statusOf(cause) !== 400) {
        const what = `unwrapping the secret_id in ${file}`;
        throw new Error(explainVaultError(cause, this.#context, { method: 'POST', path: 'sys/wrapping/unwrap', what }) + retriedNote(error), { cause });
      }
      throw new Error(
        `Vault at ${this.config.address} would not unwrap the secret_id in ${file} (${errorMessage(cause)}): a wrapping token is single use and short lived, ` +
          `so it expired or was already unwrapped; if meshvm did not unwrap it, someone else may hold the secret_id: destroy it ` +
          `(auth/${auth.mount}/role/<role>/secret-id/destroy) and give this machine a new wrapped one`,
        { cause },
      );
    }
    if (typeof secretId !== 'string' || secretId === '') {
      throw new Error(
        `the wrapping token in ${file} did not wrap an AppRole secret_id (no data.secret_id): wrap the output of auth/${auth.mount}/role/<role>/secret-id`,
      );
    }
    secrets.add(secretId);
    await this.#options.unwrap.write(auth.secretIdFile, secretId);
    await this.#options.unwrap.remove(file);
    return secretId;
  }

  /** One Vault request: log in first, bounded retries, a second login if a login token died mid-run, errors that name the fix. */
  async #call(
    method: string,
    path: string,
    what: string,
    run: (v: NodeVaultClient) => Promise<any>,
    hints: { notFound?: (said: string) => string } = {},
  ): Promise<any> {
    await this.login();
    const client = await this.#nodeVault();
    let relogged = false;
    for (;;) {
      try {
        return await withRetry(what, this.config.retry, classifyVault, () => run(client));
      } catch (error) {
        const cause = error instanceof RetriesExhausted ? error.cause : error;
        if (isInvalidToken(cause) && this.config.auth.method !== 'token' && !relogged) {
          relogged = true;
          this.#login = undefined;
          await this.login();
          continue;
        }
        if (statusOf(cause) === 404 && hints.notFound) {
          const deleted = (cause as { response?: { body?: { data?: { metadata?: { deletion_time?: string } } } } }).response?.body?.data?.metadata
            ?.deletion_time;
          throw new Error(`${what}: ${hints.notFound(deleted ? ` (its current version was deleted at ${deleted})` : '')}`, { cause });
        }
        throw new Error(explainVaultError(cause, this.#context, { method, path, what }) + retriedNote(error), { cause });
      }
    }
  }

  async #read(file: string, what: string): Promise<string> {
    const text = this.#options.readFile
      ? await this.#options.readFile(file)
      : await fs.readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
          if (error.code === 'ENOENT') return undefined;
          throw new Error(`cannot read the ${what} ${file}: ${error.code ?? error.message}`);
        });
    if (text === undefined) throw new InputError(`vault: ${what}`, `${file} does not exist`);
    const value = text.trim();
    if (value === '') throw new InputError(`vault: ${what}`, `${file} is empty`);
    return value;
  }
}

function retriedNote(error: unknown): string {
  return error instanceof RetriesExhausted ? ` (after ${error.attempts} attempts)` : '';
}
