// TLS that cannot be turned off by accident: the environment variables that would switch verification off are refused, not obeyed.

/** Node's own switch: `NODE_TLS_REJECT_UNAUTHORIZED=0` turns certificate checks off for every connection of the process. */
export const NODE_TLS_SWITCH = 'NODE_TLS_REJECT_UNAUTHORIZED';

/** An environment that would make a client send credentials to a server it has not verified. */
export class InsecureTlsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InsecureTlsError';
  }
}

/**
 * Throws when the environment turns TLS verification off for the whole process (Node reads NODE_TLS_REJECT_UNAUTHORIZED="0"
 * wherever a connection leaves rejectUnauthorized unset, which libraries such as undici and the AWS SDK do).
 * `client` names who refuses (Vault, the Kubernetes API, Route53).
 */
export function refuseInsecureTlsEnvironment(client: string, env: Record<string, string | undefined> = process.env): void {
  if (env[NODE_TLS_SWITCH] === '0') {
    throw new InsecureTlsError(
      `${client}: refusing to connect with ${NODE_TLS_SWITCH}=0 in the environment (it turns off certificate verification, so a ` +
        `token or secret would go to any server); unset it, and give the server's CA instead (caFile)`,
    );
  }
}
