// IstioToken: the workload's service-account token where the sidecar reads it, minted through a TokenRequest when missing or due.

/** The payload of a JWT (not verified: only to know when our own token expires and whom it is for). */
export function jwtClaims(token: string): { sub?: string; aud?: string | string[]; exp?: number } | undefined {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}
