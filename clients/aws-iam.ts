// The body of a Vault AWS IAM login: sts:GetCallerIdentity signed with SigV4 from the instance role's credentials.
import { SignatureV4 } from '@smithy/signature-v4';
import { Hash } from '@smithy/hash-node';
import { secrets } from '../engine/secrets.ts';

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
  expiration?: Date | undefined;
}

/** Static credentials (tests, CI) or a provider; by default the Node chain (environment, then the instance role). */
export type AwsCredentialSource = AwsCredentials | (() => Promise<AwsCredentials>);

export async function resolveCredentials(source: AwsCredentialSource | undefined): Promise<AwsCredentials> {
  let credentials: AwsCredentials;
  if (typeof source === 'function') credentials = await source();
  else if (source) credentials = source;
  else {
    const { fromNodeProviderChain } = await import('./aws-credentials.ts');
    credentials = await fromNodeProviderChain()();
  }
  secrets.add(credentials.secretAccessKey);
  secrets.add(credentials.sessionToken);
  return credentials;
}

const STS_BODY = 'Action=GetCallerIdentity&Version=2011-06-15';

/** us-east-1 signs for the global endpoint (Vault's default sts_endpoint); another region for its regional endpoint. */
export function stsUrl(region: string): string {
  return region === 'us-east-1' ? 'https://sts.amazonaws.com/' : `https://sts.${region}.amazonaws.com/`;
}

export interface IamLoginBody {
  role: string;
  iam_http_request_method: 'POST';
  iam_request_url: string;
  iam_request_body: string;
  iam_request_headers: string;
}

/** Signs GetCallerIdentity and encodes it as Vault's auth/aws/login expects: base64 URL, body, and Go-style JSON headers. */
export async function iamLoginBody(o: {
  role: string;
  region: string;
  serverIdHeader?: string | undefined;
  credentials: AwsCredentials;
  date?: Date;
}): Promise<IamLoginBody> {
  const url = new URL(stsUrl(o.region));
  const headers: Record<string, string> = {
    host: url.host,
    'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
  };
  if (o.serverIdHeader !== undefined) headers['x-vault-aws-iam-server-id'] = o.serverIdHeader;
  const signer = new SignatureV4({ service: 'sts', region: o.region, credentials: o.credentials, sha256: Hash.bind(null, 'sha256') });
  const signed = await signer.sign(
    { method: 'POST', protocol: url.protocol, hostname: url.hostname, path: url.pathname, headers, query: {}, body: STS_BODY },
    o.date ? { signingDate: o.date } : {},
  );
  // Go's http.Header: canonical names, a list of values each; Host travels in the URL, not in the header map.
  const goHeaders: Record<string, string[]> = {};
  for (const [name, value] of Object.entries(signed.headers)) {
    if (name.toLowerCase() === 'host') continue;
    goHeaders[canonicalHeaderName(name)] = [String(value)];
  }
  const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');
  return {
    role: o.role,
    iam_http_request_method: 'POST',
    iam_request_url: b64(url.href),
    iam_request_body: b64(STS_BODY),
    iam_request_headers: b64(JSON.stringify(goHeaders)),
  };
}

/** x-amz-date -> X-Amz-Date, as Go's textproto.CanonicalMIMEHeaderKey writes it. */
function canonicalHeaderName(name: string): string {
  return name.toLowerCase().replace(/(^|-)([a-z])/g, (_m, dash: string, letter: string) => dash + letter.toUpperCase());
}
