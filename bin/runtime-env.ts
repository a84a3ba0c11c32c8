// The self-contained executable's guard against Node's runtime variables: a root timer's environment must not become code or config.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { stopCoverage } from 'node:v8';

/**
 * Variables Node.js or its OpenSSL and libuv read at start-up or run time: NODE_OPTIONS (--require: code), NODE_PATH,
 * NODE_EXTRA_CA_CERTS (trust), NODE_REDIRECT_WARNINGS and NODE_V8_COVERAGE (files written as root), NODE_DEBUG (internals
 * on stderr), OPENSSL_CONF (providers: shared objects loaded), UV_*. NODE_TLS_REJECT_UNAUTHORIZED is left for the clients
 * to refuse by name (clients/tls.ts); SSL_CERT_FILE/SSL_CERT_DIR only count with --use-openssl-ca, which meshvm never gets.
 */
export function runtimeVariables(env: NodeJS.ProcessEnv): string[] {
  return Object.keys(env).filter(
    (name) =>
      (name.startsWith('NODE_') && name !== 'NODE_TLS_REJECT_UNAUTHORIZED') ||
      name.startsWith('UV_') ||
      ['OPENSSL_CONF', 'OPENSSL_MODULES', 'OPENSSL_ENGINES'].includes(name),
  );
}

/** Set in the re-run's environment: a re-run that still finds a runtime variable refuses it instead of running again. */
const RERUN = 'MESHVM_RUNTIME_CLEARED';

/**
 * When the environment has any of them, runs this executable again without them (stdio, exit status and signals passed
 * through) and returns true: the caller then does nothing else. NODE_OPTIONS itself is never obeyed (the executable is
 * built with execArgvExtension "none"), and OPENSSL_CONF is overridden by its --openssl-config; this clears the rest.
 */
export function rerunWithoutRuntimeVariables(): boolean {
  const found = runtimeVariables(process.env);
  if (process.env[RERUN] !== undefined) {
    if (found.length === 0) return false;
    process.stderr.write(`meshvm: refusing to run with ${found.join(', ')} in the environment\n`);
    process.exitCode = 1;
    return true;
  }
  if (found.length === 0) return false;
  // removed from process.env itself: Node copies NODE_V8_COVERAGE from there into every child's environment
  for (const name of found) delete process.env[name];
  // and this process writes no coverage file there at exit (Node then says on stderr that coverage was not started)
  if (found.includes('NODE_V8_COVERAGE')) stopCoverage();
  const child = spawn(process.execPath, process.argv.slice(2), { env: { ...process.env, [RERUN]: '1' }, stdio: 'inherit' });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) process.on(signal, () => child.kill(signal));
  child.on('error', (error) => {
    process.stderr.write(`meshvm: could not start again without ${found.join(', ')}: ${error.message}\n`);
    process.exitCode = 1;
  });
  child.on('exit', (code, signal) => {
    process.exitCode = code ?? 128 + (signal ? constants.signals[signal] : 0);
  });
  return true;
}
