// Checks: what `meshvm verify` runs. Each recipe owns the checks of what it declares (Recipe.checks).
import type { HostReader } from './host.ts';
import type { Declared } from './resource.ts';

/** One line of `meshvm verify`. */
export interface Check {
  /** The area: dns, control plane, certs, services, interception ... */
  check: string;
  ok: boolean;
  detail: string;
  /** What to do about a failure. */
  fix?: string;
  /** Not checked here (said why in detail); counts as passed. */
  skipped?: boolean;
}

/** What a recipe's checks get besides its attributes. */
export interface CheckContext {
  /** Read-only view of the machine. */
  host: HostReader;
  /** What this recipe declared in this plan (its own resources, not the whole runlist's). */
  declared: readonly Declared[];
  /** The names of the runlist's recipes. */
  recipes: readonly string[];
  /** A DNS server to ask instead of the system resolver: "IP" or "IP:PORT". */
  resolver?: string | undefined;
  /** How long a network check waits. */
  timeoutMs: number;
}
