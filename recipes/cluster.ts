// The cluster a mesh VM joins: how to reach it (through Vault, or directly), and one connection per run shared by recipes.
import { z } from 'zod';
import type { RecipeContext } from '../engine/recipe.ts';
import { kubernetesAccessSource, vaultConfig } from '../clients/vault-config.ts';
import type { KubernetesClient } from '../clients/kubernetes.ts';
import { readObject, type KubeObject, type ObjectApi } from '../clients/workload-group.ts';
import type { VaultClient } from '../clients/vault.ts';

/** Through Vault (the VM logs in with its cloud identity and reads a scoped token), or directly from files on the VM. */
export const clusterAttribute = z.union([
  z.strictObject({
    vault: vaultConfig,
    access: kubernetesAccessSource,
    /**
     * Keep the access (and the Vault login it was read under) between runs, until its lease ends, root-only 0600 under
     * /run/meshvm (tmpfs), as Vault Agent's token sink does: a no-op converge then makes no Vault call. Forgotten when it
     * expires, when the API server refuses its token (401/403: one fresh login), and revoked on offboard.
     */
    keepAccess: z.boolean().default(false),
  }),
  z.strictObject({
    /** The API server URL. */
    server: z.url({ protocol: /^https$/ }),
    /** Files on the VM: the cluster CA and a scoped service-account token. */
    caFile: z.string().startsWith('/'),
    tokenFile: z.string().startsWith('/'),
  }),
]);
export type ClusterAttribute = z.output<typeof clusterAttribute>;

/** One per run: logs in (to Vault) once, on first use, and remembers what several recipes ask for. */
export class Cluster {
  readonly #config: ClusterAttribute;
  readonly #context: RecipeContext;
  #client: Promise<KubernetesClient> | undefined;
  #vault: VaultClient | undefined;
  readonly #answers = new Map<string, Promise<unknown>>();

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

  async close(): Promise<void> {
    await this.#vault?.close();
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
    const { VaultClient, fileSecretIdStore } = await import('../clients/vault.ts');
    const converging = this.#context.mode === 'converge';
    const newVault = () =>
      new VaultClient(config.vault, {
        readFile: (file) => host.readFile(file),
        // a wrapped secret_id is unwrapped by a converge only: plan changes nothing
        ...(converging && { unwrap: fileSecretIdStore((file) => host.realPath(file)) }),
      });
    const { AccessCache } = await import('../clients/access-cache.ts');
    const cache = config.keepAccess ? new AccessCache(config, (file) => host.realPath(file)) : undefined;
    // plan and verify may use kept access but write nothing; a converge keeps what it read and forgets what expired
    const readAccess = async () => {
      const vault = newVault();
      this.#vault = vault;
      const access = await vault.kubernetesAccess(config.access);
      const kept = cache && converging ? vault.keepToken() : undefined;
      if (cache && kept) {
        const ends = [kept.expiresAt?.getTime(), access.tokenExpiresAt?.getTime()].filter((t): t is number => t !== undefined);
        if (ends.length > 0) {
          const { address, namespace, caFile } = config.vault;
          const vaultSide = { address, token: kept.token, ...(namespace ? { namespace } : {}), ...(caFile ? { caFile } : {}) };
          await cache.save({ access, vault: vaultSide, expiresAt: Math.min(...ends) });
        } else await vault.revoke(); // a token without an end is not kept
      }
      return access;
    };
    const cached = await cache?.load();
    if (cache && !cached && converging) await cache.drop();
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
          if (converging) await cache?.drop();
          return (await readAccess()).token;
        }
        return (await this.#vault!.kubernetesAccess(config.access)).token;
      },
    });
  }
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
