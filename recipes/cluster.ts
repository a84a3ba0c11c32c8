// The cluster a mesh VM joins: how to reach it (through Vault, or directly), and one connection per run shared by recipes.
import { z } from 'zod';
import type { RecipeContext } from '../engine/recipe.ts';
import { kubernetesAccessSource, vaultConfig } from '../clients/vault-config.ts';
import type { KubernetesClient } from '../clients/kubernetes.ts';
import { readObject, type KubeObject, type ObjectApi } from '../clients/workload-group.ts';
import type { VaultClient } from '../clients/vault.ts';

/** Through Vault (the VM logs in with its cloud identity and reads a scoped token), or directly from files on the VM. */
export const clusterAttribute = z.union([
  z.strictObject({ vault: vaultConfig, access: kubernetesAccessSource }),
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
    const vault = new VaultClient(config.vault, {
      readFile: (file) => host.readFile(file),
      // a wrapped secret_id is unwrapped by a converge only: plan changes nothing
      ...(this.#context.mode === 'converge' && { unwrap: fileSecretIdStore((file) => host.realPath(file)) }),
    });
    this.#vault = vault;
    const access = await vault.kubernetesAccess(config.access);
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
      refreshToken: async () => (await vault.kubernetesAccess(config.access)).token,
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
