// The cluster a mesh VM joins: how to reach it (through Vault, or directly), and one connection per run shared by recipes.
import { z } from 'zod';
import type { RecipeContext } from '../engine/recipe.ts';
import { kubernetesAccessSource, vaultConfig } from '../clients/vault-config.ts';
import type { KubernetesClient } from '../clients/kubernetes.ts';
import { readObject, type KubeObject, type ObjectApi } from '../clients/workload-group.ts';
import type { VaultClient } from '../clients/vault.ts';
import type { KeptInput, KeptInputs, KeptRead } from '../clients/kept-inputs.ts';
import { errorMessage } from '../engine/errors.ts';

export type { KeptRead };

/**
 * How long the slow-changing cluster inputs are kept between runs (the mesh config, the injector's values, the network
 * label, the control plane's and the cluster DNS's addresses, the service ranges, istiod's version): '1h', '30m' or
 * '30min', '90s', '1d', or a number of seconds; 0 or false reads them every run. The VM's own objects (its WorkloadGroup)
 * and the root certificate are read every run. A boot (/run is tmpfs), `--refresh` and verify read everything fresh.
 */
const keepInputs = z
  .union([
    z.literal(false),
    z.number().int().min(0),
    z.string().regex(/^\d+(s|m|min|h|d)$/, "a duration such as '1h', '30m', '90s' or '1d' (or a number of seconds; 0 or false: every run)"),
  ])
  .default('1h');

/** Through Vault (the VM logs in with its cloud identity and reads a scoped token), or directly from files on the VM. */
export const clusterAttribute = z.union([
  z.strictObject({
    vault: vaultConfig,
    access: kubernetesAccessSource,
    /**
     * Keep the access (and the Vault login it was read under) between runs, until its lease ends, root-only 0600 under
     * /run/meshvm (tmpfs), as Vault Agent's token sink does: a no-op converge then makes no Vault call. Forgotten when it
     * expires, when the API server refuses its token (401/403: one fresh login), and revoked on offboard. On by default;
     * false logs in and revokes every run.
     */
    keepAccess: z.boolean().default(true),
    keepInputs,
  }),
  z.strictObject({
    /** The API server URL. */
    server: z.url({ protocol: /^https$/ }),
    /** Files on the VM: the cluster CA and a scoped service-account token. */
    caFile: z.string().startsWith('/'),
    tokenFile: z.string().startsWith('/'),
    keepInputs,
  }),
]);
export type ClusterAttribute = z.output<typeof clusterAttribute>;

/** A keepInputs value in seconds ('1h', '30m' or '30min', '90s', '1d', a number); 0 when inputs are not kept. */
export function keepSeconds(value: z.output<typeof keepInputs>): number {
  if (value === false) return 0;
  if (typeof value === 'number') return value;
  const [, n, unit] = /^(\d+)(s|m|min|h|d)$/.exec(value)!;
  return Number(n) * { s: 1, m: 60, min: 60, h: 3600, d: 86_400 }[unit as 's' | 'm' | 'min' | 'h' | 'd'];
}

/** One per run: logs in (to Vault) once, on first use, and remembers what several recipes ask for. */
export class Cluster {
  readonly #config: ClusterAttribute;
  readonly #context: RecipeContext;
  #client: Promise<KubernetesClient> | undefined;
  #vault: VaultClient | undefined;
  readonly #answers = new Map<string, Promise<unknown>>();
  /** The inputs kept between runs (loaded once, on first use), and those this run read fresh (kept at close). */
  #kept: Promise<{ store: KeptInputs; inputs: Map<string, KeptInput> }> | undefined;
  readonly #fresh = new Map<string, KeptInput>();
  /** Keeps the access this run read from Vault (keepAccess, a converge): done at close. */
  #keepAccess: (() => Promise<void>) | undefined;

  constructor(config: ClusterAttribute, context: RecipeContext) {
    this.#config = config;
    this.#context = context;
  }

  /** The Kubernetes client, configured from Vault's answer (or the files) on first use. */
  kubernetes(): Promise<KubernetesClient> {
    this.#client ??= this.#connect();
    return this.#client;
  }

  /** A read made once per run, whichever recipes ask for it. */
  once<T>(key: string, read: (k: KubernetesClient) => Promise<T>): Promise<T> {
    let answer = this.#answers.get(key) as Promise<T> | undefined;
    if (!answer) {
      answer = this.kubernetes().then(read);
      this.#answers.set(key, answer);
    }
    return answer;
  }

  /**
   * An API object as the run found it, before any write: one GET whoever asks (the WorkloadGroup is read by the mesh inputs
   * and by the registration's resource). Not for a read that must see this run's own writes.
   */
  object(api: ObjectApi, namespace: string, name: string): Promise<KubeObject | undefined> {
    return this.once(`object:${api.group}/${api.plural}:${namespace}/${name}`, (k) => readObject(k, api, namespace, name));
  }

  /**
   * A slow-changing cluster input: used as kept by an earlier run while younger than keepInputs (no request at all),
   * else read, and kept by a converge at the end of the run. plan uses kept inputs but keeps none; verify and --refresh
   * read everything. A kept input parse refuses is read again, with a warning.
   */
  kept<T>(key: string, read: KeptRead<T>): Promise<T> {
    let answer = this.#answers.get(`kept:${key}`) as Promise<T> | undefined;
    if (!answer) {
      answer = this.#keptRead(key, read);
      this.#answers.set(`kept:${key}`, answer);
    }
    return answer;
  }

  /**
   * The end of the run: a converge that planned (`keep`) keeps the cluster inputs it read and the access it logged in for;
   * a run that failed before (or plan, verify) keeps nothing new, and its Vault login is revoked.
   */
  async close(o: { keep?: boolean } = {}): Promise<void> {
    if (o.keep) {
      await this.#keepInputs().catch((error: unknown) => this.#warn(`could not keep the cluster inputs read in this run: ${errorMessage(error)}`));
      await this.#keepAccess?.();
    }
    this.#keepAccess = undefined;
    await this.#vault?.close();
  }

  get #maxAgeMs(): number {
    return keepSeconds(this.#config.keepInputs) * 1000;
  }

  async #keptRead<T>(key: string, read: KeptRead<T>): Promise<T> {
    if (this.#maxAgeMs > 0 && !this.#context.refresh) {
      const { store, inputs } = await this.#loadKept();
      const entry = inputs.get(key);
      const age = entry && Date.now() - entry.readAt;
      if (entry && age !== undefined && age >= 0 && age < this.#maxAgeMs) {
        try {
          return await read.parse(entry.value);
        } catch (error) {
          this.#warn(`ignoring the kept cluster input "${key}" in ${store.file} (${errorMessage(error)}); reading it from the cluster again`);
        }
      }
    }
    const readAt = Date.now();
    const raw = await read.fetch(await this.kubernetes());
    const value = await read.parse(raw);
    if (this.#maxAgeMs > 0 && this.#context.writable) this.#fresh.set(key, { readAt, value: raw });
    return value;
  }

  #loadKept(): Promise<{ store: KeptInputs; inputs: Map<string, KeptInput> }> {
    this.#kept ??= (async () => {
      const { KeptInputs } = await import('../clients/kept-inputs.ts');
      const store = new KeptInputs(keptKey(this.#config), this.#context.host, (text) => this.#warn(text));
      return { store, inputs: await store.load() };
    })();
    return this.#kept;
  }

  async #keepInputs(): Promise<void> {
    const writer = this.#context.writable;
    if (!writer || this.#fresh.size === 0) return;
    const { store } = await this.#loadKept();
    await store.save(writer, this.#fresh, this.#maxAgeMs);
  }

  #warn(text: string): void {
    if (this.#context.warn) this.#context.warn(text);
    else process.stderr.write(`meshvm: warning: ${text}\n`);
  }

  async #connect(): Promise<KubernetesClient> {
    const { KubernetesClient } = await import('../clients/kubernetes.ts');
    const host = this.#context.host;
    const config = this.#config;
    if ('server' in config) {
      const read = async (file: string, what: string) => {
        const text = await host.readFile(file);
        if (!text?.trim()) throw new Error(`the ${what} file ${file} is missing or empty`);
        return text.trim();
      };
      const token = await read(config.tokenFile, 'cluster token');
      const { secrets } = await import('../engine/secrets.ts');
      secrets.add(token);
      const access = { server: config.server, caPem: await read(config.caFile, 'cluster CA'), token };
      const { checkKubernetesAccess } = await import('../clients/cluster-values.ts');
      checkKubernetesAccess(access, 'the cluster attribute', { server: 'cluster.server', ca: config.caFile, token: config.tokenFile });
      return new KubernetesClient(access);
    }
    const { VaultClient, hostSecretIdStore } = await import('../clients/vault.ts');
    // a converge (and offboard) is given the machine writable; plan and verify are not, and write nothing
    const writer = this.#context.writable;
    const newVault = () =>
      new VaultClient(config.vault, {
        readFile: (file) => host.readFile(file),
        // a wrapped secret_id is unwrapped by a converge only: plan changes nothing
        ...(writer && { unwrap: hostSecretIdStore(writer) }),
      });
    const { AccessCache } = await import('../clients/access-cache.ts');
    const cache = config.keepAccess ? new AccessCache(keptKey(config), host, writer) : undefined;
    // plan and verify may use kept access but write nothing; a converge keeps what it read and forgets what expired
    const readAccess = async () => {
      const vault = newVault();
      this.#vault = vault;
      const access = await vault.kubernetesAccess(config.access);
      const login = cache?.writable ? vault.loginToken() : undefined;
      const ends = [login?.expiresAt?.getTime(), access.tokenExpiresAt?.getTime()].filter((t): t is number => t !== undefined);
      // kept at the end of a run that planned (a token without an end is not kept: revoked then, as without keepAccess)
      if (cache && login && ends.length > 0) {
        const { address, namespace, caFile } = config.vault;
        const vaultSide = { address, token: login.token, ...(namespace ? { namespace } : {}), ...(caFile ? { caFile } : {}) };
        this.#keepAccess = async () => {
          try {
            await cache.save({ access, vault: vaultSide, expiresAt: Math.min(...ends) });
            vault.keepToken();
          } catch (error) {
            this.#warn(`could not keep the cluster access in ${cache.file} (${errorMessage(error)}): its Vault token is revoked`);
          }
        };
      }
      return access;
    };
    const cached = await cache?.load();
    const forget = () => cache?.drop().catch((error: unknown) => this.#warn(`could not forget the kept cluster access ${cache.file}: ${errorMessage(error)}`));
    // an expired (or untrusted) kept file is removed; none there: nothing to do
    if (cache?.writable && !cached && (await host.stat(cache.file).catch(() => undefined))) await forget();
    const access = cached?.access ?? (await readAccess());
    const { kv } = config.access;
    const { checkKubernetesAccess } = await import('../clients/cluster-values.ts');
    checkKubernetesAccess(access, `the KV v2 secret ${kv.mount}/data/${kv.path}`, {
      server: kv.serverKey,
      ca: kv.caKey,
      token: config.access.creds ? `the token minted by ${config.access.creds.mount}/creds/${config.access.creds.role}` : kv.tokenKey,
    });
    return new KubernetesClient({
      server: access.server,
      caPem: access.caPem,
      token: access.token,
      // kept access the API server refuses (revoked, expired early, its rights changed): forgotten, and one fresh login
      ...(cached && { refreshOnForbidden: true }),
      refreshToken: async () => {
        if (cached) {
          if (cache?.writable) await forget();
          return (await readAccess()).token;
        }
        return (await this.#vault!.kubernetesAccess(config.access)).token;
      },
    });
  }
}

/**
 * What a kept file (access, inputs) is named by: how the cluster is reached, without the keep* options, so that changing
 * them (or their defaults) never orphans a kept file and the Vault token in it.
 */
function keptKey(config: ClusterAttribute): Record<string, unknown> {
  const { keepAccess: _access, keepInputs: _inputs, ...where } = config as ClusterAttribute & { keepAccess?: unknown; keepInputs?: unknown };
  return where;
}

/** The run's connection to the cluster, or an error that says which attribute to set. */
export function cluster(context: RecipeContext, config: ClusterAttribute | undefined, needed: string): Cluster {
  if (!config)
    throw new Error(
      `${needed} is not given, so it must be read from the cluster, but no "cluster" attribute says how to reach it (vault + access, or server + caFile + tokenFile)`,
    );
  // keyed by the configuration: two recipes given different clusters get different connections, never the first one's
  return context.service(`cluster:${JSON.stringify(config)}`, () => new Cluster(config, context));
}
