// SIGINT and SIGTERM in any phase of a run: noted, never fatal at once; the run stops at the next safe point and cleans up.

/** The phases a signal can arrive in, as said to the person who sent it. */
export type Phase = 'loading the runlist' | 'waiting for the run lock' | 'planning' | 'verifying' | 'converging' | 'reporting';

/** Thrown at a phase's end when a signal arrived during it: the run stops, revokes, unlocks and reports `interrupted`. */
export class Interrupted extends Error {
  constructor(signal: string, phase: Phase) {
    super(`interrupted by ${signal} while ${phase}${phase === 'verifying' ? '' : ': stopped before changing anything'}`);
    this.name = 'Interrupted';
  }
}

/** The exit status of a process ended by a signal, as a shell gives it (128 + the signal's number): 130, 143. */
export const signalStatus = (signal: string): number => (signal === 'SIGINT' ? 130 : 143);

/**
 * Listens for SIGINT and SIGTERM from the start of a run to the end of its clean-up (without a listener Node exits at
 * once: no report, the Vault token left valid, the lock file still naming this run). Loading and planning only read,
 * so they end first; the lock wait is aborted; converging finishes the resource in flight (the runner asks
 * `received`). A second signal, while that or the clean-up (a Vault revoke, the report) still runs, is an operator
 * who will not wait: `onSecond` says what is left undone and the process exits at once, 130 (SIGINT) or 143 (SIGTERM).
 */
export class Signals {
  phase: Phase = 'loading the runlist';
  received: string | undefined;
  readonly #abort = new AbortController();
  readonly #onSignal: (signal: string, phase: Phase) => void;
  readonly #onSecond: (signal: string, status: number) => void;
  readonly #listener = (signal: NodeJS.Signals) => {
    if (this.received !== undefined) {
      const status = signalStatus(signal);
      this.#onSecond(signal, status);
      process.exit(status);
    }
    this.#onSignal(signal, this.phase);
    this.received = signal;
    this.#abort.abort();
  };

  constructor(onSignal: (signal: string, phase: Phase) => void, onSecond: (signal: string, status: number) => void = () => {}) {
    this.#onSignal = onSignal;
    this.#onSecond = onSecond;
    process.on('SIGINT', this.#listener);
    process.on('SIGTERM', this.#listener);
  }

  /** Aborted when a signal arrives (the lock wait listens). */
  get aborted(): AbortSignal {
    return this.#abort.signal;
  }

  /** Throws Interrupted when a signal arrived during the phase that just ended. */
  check(): void {
    if (this.received !== undefined) throw new Interrupted(this.received, this.phase);
  }

  dispose(): void {
    process.off('SIGINT', this.#listener);
    process.off('SIGTERM', this.#listener);
  }
}
