// The slow-changing cluster inputs (mesh config, gateway addresses, service ranges...) kept between runs with the time each was read: root-only 0600 on tmpfs.
import type { Host, HostReader } from '../engine/host.ts';
import type { KubernetesClient } from './kubernetes.ts';
import { configDigest, KEPT_DIR, readKeptFile, writeKeptFile } from './kept-file.ts';

/** One file per cluster configuration. */
export const INPUTS_DIR = `${KEPT_DIR}/cluster-inputs`;
/** The file's format: a file of another one (an older meshvm's) is read again quietly. */
const FORMAT = 1;

/**
 * A read of a slow-changing cluster input that may be kept between runs (recipes/cluster.ts kept()): `fetch` returns what
 * the server said, as JSON (null for "not there"); `parse` types it, throwing when it is not what it must be. parse runs
 * on a fresh answer and on a kept one alike: a file under /run is outside input too.
 */
export interface KeptRead<T> {
  fetch(k: KubernetesClient): Promise<unknown>;
  parse(raw: unknown): T | Promise<T>;
}

/** What the server said (JSON, as the read's fetch gave it) and when it was read (ms since the epoch). */
export interface KeptInput {
  readAt: number;
  value: unknown;
}

export class KeptInputs {
  readonly file: string;
  readonly #host: HostReader;
  readonly #warn: (text: string) => void;

  constructor(configuration: unknown, host: HostReader, warn: (text: string) => void) {
    this.file = `${INPUTS_DIR}/${configDigest(configuration)}.json`;
    this.#host = host;
    this.#warn = warn;
  }

  /** The kept inputs by key; none when there is no file, and none (with a warning) when it is not to be trusted or not well formed. */
  async load(o: { quiet?: boolean } = {}): Promise<Map<string, KeptInput>> {
    const kept = new Map<string, KeptInput>();
    const read = await readKeptFile(this.#host, this.file);
    if (read === undefined) return kept;
    const ignore = (why: string) => {
      if (!o.quiet) this.#warn(`ignoring the kept cluster inputs ${this.file}: ${why}; reading them from the cluster again`);
      return kept;
    };
    if (typeof read !== 'string') return ignore(read.problem);
    let parsed: unknown;
    try {
      parsed = JSON.parse(read);
    } catch {
      return ignore('it is not JSON');
    }
    const file = parsed as { format?: unknown; inputs?: unknown };
    if (!file || typeof file !== 'object' || Array.isArray(file)) return ignore('it is not a JSON object');
    if (file.format !== FORMAT) return kept; // another meshvm's format: read again, nothing wrong
    if (!file.inputs || typeof file.inputs !== 'object' || Array.isArray(file.inputs)) return ignore('"inputs" is not a map');
    for (const [key, entry] of Object.entries(file.inputs as Record<string, unknown>)) {
      const e = entry as { readAt?: unknown; value?: unknown } | null;
      if (!e || typeof e !== 'object' || typeof e.readAt !== 'number' || !Number.isFinite(e.readAt) || !('value' in e))
        return ignore(`its entry "${key}" has no readAt time or no value`);
      kept.set(key, { readAt: e.readAt, value: e.value });
    }
    return kept;
  }

  /** Keeps the inputs read fresh with those still young enough in the file (written by another run meanwhile included). */
  async save(writer: Host, fresh: ReadonlyMap<string, KeptInput>, maxAgeMs: number, now = Date.now()): Promise<void> {
    const inputs: Record<string, KeptInput> = {};
    for (const [key, entry] of await this.load({ quiet: true })) if (now - entry.readAt < maxAgeMs && entry.readAt <= now) inputs[key] = entry;
    for (const [key, entry] of fresh) inputs[key] = entry;
    await writeKeptFile(writer, this.file, `${JSON.stringify({ format: FORMAT, inputs })}\n`);
  }
}
