// The scoped Kubernetes access read from Vault, kept between runs for its lease: root-only 0600 on tmpfs (/run), as Vault Agent's token sink.
import type { Host, HostReader } from '../engine/host.ts';
import { secrets } from '../engine/secrets.ts';
import { configDigest, KEPT_DIR, readKeptFile, writeKeptFile } from './kept-file.ts';
import type { KubernetesAccess } from './vault.ts';

/** Under /run (tmpfs: gone at reboot, never on disk); one file per cluster configuration. */
export const ACCESS_CACHE_DIR = `${KEPT_DIR}/cluster-access`;
/** Kept access is used only while it has this long left (a run must not start with a token about to die). */
export const EXPIRY_MARGIN_MS = 60_000;

/** What is kept: the access and the Vault login token it was read under (the lease's parent: revoking it revokes the lease). */
export interface KeptAccess {
  access: KubernetesAccess;
  vault: { address: string; namespace?: string; caFile?: string; token: string };
  /** When the kept access stops being used: the earliest of the Vault token's and the minted token's ends. */
  expiresAt: number;
}

/** The cache file of one cluster configuration, read through the run's Host, written through it (converge only). */
export class AccessCache {
  readonly file: string;
  readonly #host: HostReader;
  readonly #writer: Host | undefined;

  constructor(configuration: unknown, host: HostReader, writer?: Host) {
    this.file = `${ACCESS_CACHE_DIR}/${configDigest(configuration)}.json`;
    this.#host = host;
    this.#writer = writer;
  }

  /** Whether this run may keep and forget access (a converge); plan and verify only use what is kept. */
  get writable(): boolean {
    return this.#writer !== undefined;
  }

  /** The kept access while it is valid; undefined when there is none, it is unreadable or it is (nearly) expired. Secrets registered. */
  async load(now = Date.now()): Promise<KeptAccess | undefined> {
    const kept = await readKept(this.#host, this.file);
    if (!kept || kept.expiresAt - EXPIRY_MARGIN_MS <= now) return undefined;
    secrets.add(kept.access.token);
    secrets.add(kept.vault.token);
    return kept;
  }

  /** Keeps it: written whole or not at all, 0600 in a 0700 directory, through the safe path walk. */
  async save(kept: KeptAccess): Promise<void> {
    const text = JSON.stringify({ ...kept, access: { ...kept.access, tokenExpiresAt: kept.access.tokenExpiresAt?.toISOString() } });
    await writeKeptFile(this.#need(), this.file, text, { sensitive: true });
  }

  /** Forgets it (expired, revoked, offboarded). */
  async drop(): Promise<void> {
    await this.#need().remove(this.file);
  }

  #need(): Host {
    if (!this.#writer) throw new Error(`the kept cluster access ${this.file} is changed by a converge only`);
    return this.#writer;
  }
}

/**
 * Offboarding: every kept access revoked (its Vault token, and with it the leases read under it) and forgotten. Returns
 * what could not be revoked (it then ends at its TTL); never throws for a revoke, the files go in any case.
 */
export async function forgetKeptAccess(host: Host): Promise<string[]> {
  const names = (await host.listDir(ACCESS_CACHE_DIR).catch(() => undefined)) ?? [];
  const problems: string[] = [];
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    const file = `${ACCESS_CACHE_DIR}/${name}`;
    const kept = await readKept(host, file);
    if (kept) {
      secrets.add(kept.access.token);
      secrets.add(kept.vault.token);
      const { VaultClient } = await import('./vault.ts');
      const { address, namespace, caFile } = kept.vault;
      const vault = new VaultClient(
        { address, auth: { method: 'token' }, ...(namespace ? { namespace } : {}), ...(caFile ? { caFile } : {}), insecure: address.startsWith('http:') },
        { readFile: (f) => host.readFile(f), env: {}, warn: () => undefined },
      );
      vault.adoptToken(kept.vault.token);
      await vault.revoke();
      if (vault.closeError) problems.push(vault.closeError);
    }
    await host.remove(file);
  }
  return problems;
}

async function readKept(host: HostReader, file: string): Promise<KeptAccess | undefined> {
  // only a file this user wrote, readable by nobody else (a kept token in a file others could have written is not trusted)
  const text = await readKeptFile(host, file);
  if (typeof text !== 'string') return undefined;
  try {
    const parsed = JSON.parse(text) as KeptAccess & { access: { tokenExpiresAt?: string } };
    const { access, vault, expiresAt } = parsed;
    const strings = [access?.server, access?.caPem, access?.token, vault?.address, vault?.token];
    if (!strings.every((s) => typeof s === 'string' && s !== '') || typeof expiresAt !== 'number') return undefined;
    return {
      access: {
        server: access.server,
        caPem: access.caPem,
        token: access.token,
        ...(access.tokenExpiresAt ? { tokenExpiresAt: new Date(access.tokenExpiresAt) } : {}),
      },
      vault: {
        address: vault.address,
        token: vault.token,
        ...(vault.namespace ? { namespace: vault.namespace } : {}),
        ...(vault.caFile ? { caFile: vault.caFile } : {}),
      },
      expiresAt,
    };
  } catch {
    return undefined;
  }
}
