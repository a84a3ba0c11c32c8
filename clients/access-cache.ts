// The scoped Kubernetes access read from Vault, kept between runs for its lease: root-only 0600 on tmpfs (/run), as Vault Agent's token sink.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { secrets } from '../engine/secrets.ts';
import type { KubernetesAccess } from './vault.ts';

/** Under /run (tmpfs: gone at reboot, never on disk); one file per cluster configuration. */
export const ACCESS_CACHE_DIR = '/run/meshvm/cluster-access';
/** Kept access is used only while it has this long left (a run must not start with a token about to die). */
export const EXPIRY_MARGIN_MS = 60_000;

/** What is kept: the access and the Vault login token it was read under (the lease's parent: revoking it revokes the lease). */
export interface KeptAccess {
  access: KubernetesAccess;
  vault: { address: string; namespace?: string; caFile?: string; token: string };
  /** When the kept access stops being used: the earliest of the Vault token's and the minted token's ends. */
  expiresAt: number;
}

/** The cache file of one cluster configuration, under a root (`real` maps the guest path). */
export class AccessCache {
  readonly file: string;
  readonly #real: (guestPath: string) => string;

  constructor(configuration: unknown, real: (guestPath: string) => string) {
    const key = createHash('sha256').update(JSON.stringify(configuration)).digest('hex').slice(0, 16);
    this.file = `${ACCESS_CACHE_DIR}/${key}.json`;
    this.#real = real;
  }

  /** The kept access while it is valid; undefined when there is none, it is unreadable or it is (nearly) expired. Secrets registered. */
  async load(now = Date.now()): Promise<KeptAccess | undefined> {
    const kept = await readKept(this.#real(this.file));
    if (!kept || kept.expiresAt - EXPIRY_MARGIN_MS <= now) return undefined;
    secrets.add(kept.access.token);
    secrets.add(kept.vault.token);
    return kept;
  }

  /** Keeps it: written whole or not at all, 0600 in a 0700 directory. */
  async save(kept: KeptAccess): Promise<void> {
    const target = this.#real(this.file);
    await fs.mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
    await fs.chmod(path.dirname(target), 0o700);
    const temp = path.join(path.dirname(target), `.${path.basename(target)}.meshvm-${process.pid}`);
    const handle = await fs.open(temp, 'wx', 0o600);
    try {
      await handle.writeFile(JSON.stringify({ ...kept, access: { ...kept.access, tokenExpiresAt: kept.access.tokenExpiresAt?.toISOString() } }));
    } finally {
      await handle.close();
    }
    await fs.rename(temp, target).catch(async (error: unknown) => {
      await fs.rm(temp, { force: true });
      throw error;
    });
  }

  /** Forgets it (expired, revoked, offboarded). */
  async drop(): Promise<void> {
    await fs.rm(this.#real(this.file), { force: true });
  }
}

/**
 * Offboarding: every kept access revoked (its Vault token, and with it the leases read under it) and forgotten. Returns
 * what could not be revoked (it then ends at its TTL); never throws for a revoke, the files go in any case.
 */
export async function forgetKeptAccess(host: { realPath(p: string): string; readFile(p: string): Promise<string | undefined> }): Promise<string[]> {
  const dir = host.realPath(ACCESS_CACHE_DIR);
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const problems: string[] = [];
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    const kept = await readKept(path.join(dir, name));
    if (kept) {
      secrets.add(kept.access.token);
      secrets.add(kept.vault.token);
      const { VaultClient } = await import('./vault.ts');
      const { address, namespace, caFile } = kept.vault;
      const vault = new VaultClient(
        { address, auth: { method: 'token' }, ...(namespace ? { namespace } : {}), ...(caFile ? { caFile } : {}), insecure: address.startsWith('http:') },
        { readFile: (file) => host.readFile(file), env: {}, warn: () => undefined },
      );
      vault.adoptToken(kept.vault.token);
      await vault.revoke();
      if (vault.closeError) problems.push(vault.closeError);
    }
    await fs.rm(path.join(dir, name), { force: true });
  }
  return problems;
}

async function readKept(file: string): Promise<KeptAccess | undefined> {
  // only a file this user wrote, readable by nobody else (a kept token in a file others could have written is not trusted)
  const stat = await fs.lstat(file).catch(() => undefined);
  if (!stat?.isFile() || (stat.mode & 0o077) !== 0 || stat.uid !== process.getuid?.()) return undefined;
  const text = await fs.readFile(file, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
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
