// The self-contained executable's guard against Node's runtime variables: a root timer's environment must not become code or config.
import { stopCoverage } from 'node:v8';
import path from 'node:path';
import { fileNotOwned } from './owned-path.js';

/**
 * NODE_EXTRA_CA_CERTS is kept when it names a file only root (or this user) controls (bin/owned-path.js), as Debian's
 * /etc/ssl/certs/ca-certificates.crt: it only adds trust anchors, and such a file holds those its owner chose. Anywhere
 * else (a file another user could write, or missing) it is cleared like the rest. Keeping it saves the re-run: a second
 * start of the executable, ~0.1 s of every run on a machine that sets it for all processes.
 */
export function trustedCaFile(file: string | undefined, uid = process.getuid?.() ?? 0): boolean {
  return file !== undefined && file !== '' && path.isAbsolute(file) && fileNotOwned(file, uid) === undefined;
}

/**
 * Variables Node.js or its OpenSSL and libuv read at start-up or run time: NODE_OPTIONS (--require: code), NODE_PATH,
 * NODE_EXTRA_CA_CERTS (trust: kept only for a root-controlled file, trustedCaFile), NODE_REDIRECT_WARNINGS and
 * NODE_V8_COVERAGE (files written as root), NODE_DEBUG (internals on stderr), OPENSSL_CONF (providers: shared objects
 * loaded), UV_*. NODE_TLS_REJECT_UNAUTHORIZED is left for the clients to refuse by name (clients/tls.ts);
 * SSL_CERT_FILE/SSL_CERT_DIR only count with --use-openssl-ca, which meshvm never gets.
 */
export function runtimeVariables(env: NodeJS.ProcessEnv, trusted: (file: string | undefined) => boolean = trustedCaFile): string[] {
  return Object.keys(env).filter(
    (name) =>
      (name.startsWith('NODE_') && name !== 'NODE_TLS_REJECT_UNAUTHORIZED' && !(name === 'NODE_EXTRA_CA_CERTS' && trusted(env[name]))) ||
      name.startsWith('UV_') ||
      ['OPENSSL_CONF', 'OPENSSL_MODULES', 'OPENSSL_ENGINES'].includes(name),
  );
}

/** Set in the re-run's environment: a re-run that still finds a runtime variable refuses it instead of running again. */
const RERUN = 'MESHVM_RUNTIME_CLEARED';

/**
 * When the environment has any of them, replaces this process by this executable without them (execve: the same pid,
 * stdio and signals, so a lock names it and a kill reaches it) and returns true: the caller then does nothing else.
 * NODE_OPTIONS itself is never obeyed (the executable is built with execArgvExtension "none"), and OPENSSL_CONF is
 * overridden by its --openssl-config; this clears the rest.
 */
export function rerunWithoutRuntimeVariables(): boolean {
  const found = runtimeVariables(process.env);
  if (found.length === 0) return false;
  if (process.env[RERUN] !== undefined) {
    process.stderr.write(`meshvm: refusing to run with ${found.join(', ')} in the environment\n`);
    process.exitCode = 1;
    return true;
  }
  const env: Record<string, string> = { [RERUN]: '1' };
  for (const [name, value] of Object.entries(process.env)) if (value !== undefined && !found.includes(name)) env[name] = value;
  // no coverage file written by this process image either (Node then says on stderr that coverage was not started)
  if (found.includes('NODE_V8_COVERAGE')) stopCoverage();
  // a single executable's argv repeats its path: [meshvm, meshvm, ...arguments]
  process.execve!(process.execPath, [process.execPath, ...process.argv.slice(2)], env);
  return true; // not reached: execve replaces the process, or throws
}
