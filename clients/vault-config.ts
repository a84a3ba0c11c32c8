// The Vault connection a runlist gives (address, namespace, CA, auth method): a zod schema that loads no client library.
import { z } from 'zod';

const retry = z.strictObject({
  attempts: z.number().int().min(1).max(10).default(5),
  baseMs: z.number().int().min(0).default(200),
  maxMs: z.number().int().min(0).default(5000),
});

const awsAuth = z.strictObject({
  method: z.literal('aws'),
  /** The Vault AWS auth role (auth/<mount>/role/<role>). */
  role: z.string().min(1),
  mount: z.string().min(1).default('aws'),
  /** Sent and signed as X-Vault-AWS-IAM-Server-ID when the Vault AWS auth config sets iam_server_id_header_value. */
  serverIdHeader: z.string().min(1).optional(),
  /** STS region signed for: us-east-1 means the global endpoint https://sts.amazonaws.com/ (Vault's default). */
  region: z.string().min(1).default('us-east-1'),
});

const approleAuth = z.strictObject({
  method: z.literal('approle'),
  /** Files holding the role_id and secret_id (a trailing newline is ignored). */
  roleIdFile: z.string().min(1),
  secretIdFile: z.string().min(1),
  /**
   * A file holding a response-wrapping token (`vault write -wrap-ttl=10m -f auth/approle/role/<role>/secret-id`): when it is
   * there, the run unwraps it once (sys/wrapping/unwrap), keeps the secret_id in secretIdFile (0600) and removes it.
   */
  wrappedSecretIdFile: z.string().min(1).optional(),
  mount: z.string().min(1).default('approle'),
});

const tokenAuth = z.strictObject({
  method: z.literal('token'),
  /** File holding the token; without it, the VAULT_TOKEN environment variable. */
  file: z.string().min(1).optional(),
});

export const vaultConfig = z
  .strictObject({
    /** e.g. https://vault.example.com:8200; http:// only with insecure: true */
    address: z.url({ protocol: /^https?$/ }),
    /** Allows an http:// address (the secret_id and tokens then travel in clear); every run prints a warning. */
    insecure: z.boolean().default(false),
    /** Vault Enterprise namespace (X-Vault-Namespace), e.g. "team-a". */
    namespace: z.string().min(1).optional(),
    /** PEM file of the CA that signed Vault's certificate. */
    caFile: z.string().min(1).optional(),
    auth: z.discriminatedUnion('method', [awsAuth, approleAuth, tokenAuth]),
    /** Per request. */
    timeoutSeconds: z.number().positive().default(10),
    retry: retry.default({ attempts: 5, baseMs: 200, maxMs: 5000 }),
  })
  .refine((c) => c.insecure || !c.address.startsWith('http:'), {
    path: ['address'],
    message: 'is http://: the login secret and every token would travel in clear; use https:// (or set insecure: true, for a lab)',
  });

export type VaultConfig = z.output<typeof vaultConfig>;
export type VaultConfigInput = z.input<typeof vaultConfig>;
export type VaultAuth = VaultConfig['auth'];

/** Where the operator keeps the scoped Kubernetes access in KV v2, and which keys hold what. */
export const kubernetesAccessSource = z.strictObject({
  kv: z.strictObject({
    mount: z.string().min(1).default('secret'),
    /** Path inside the mount, e.g. "meshvm/cluster-a" (API path secret/data/meshvm/cluster-a). */
    path: z.string().min(1),
    serverKey: z.string().default('server'),
    tokenKey: z.string().default('token'),
    caKey: z.string().default('ca.crt'),
  }),
  /** Mint the token from Vault's Kubernetes secrets engine instead of reading it from KV. */
  creds: z
    .strictObject({
      mount: z.string().min(1).default('kubernetes'),
      role: z.string().min(1),
      /** The Kubernetes namespace the token is for (kubernetes_namespace). */
      namespace: z.string().min(1),
      ttlSeconds: z.number().int().min(600).default(1200),
      audiences: z.array(z.string()).optional(),
    })
    .optional(),
});

export type KubernetesAccessSource = z.output<typeof kubernetesAccessSource>;
export type KubernetesAccessSourceInput = z.input<typeof kubernetesAccessSource>;
