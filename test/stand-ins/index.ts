// Loopback stand-ins for the APIs meshvm talks to: Vault HTTP API v1, Kubernetes API v1.33, Route 53 API 2013-04-01.
export { startVault } from './vault.ts';
export type {
  VaultOptions,
  VaultStandIn,
  VaultFault,
  VaultState,
  VaultToken,
  PolicyRule,
  AppRole,
  AwsRole,
  AwsIdentity,
  KubernetesRole,
  KubernetesTokenRequest,
  MintKubernetesToken,
} from './vault.ts';
export { startKubernetes, ObjectStore, TokenRegistry } from './kubernetes.ts';
export type { KubernetesOptions, KubernetesStandIn, KubernetesFault, KubeIdentity, KubeObject, RbacRule, MintedToken } from './kubernetes.ts';
export { startRoute53, normalizeName } from './route53.ts';
export type { Route53Options, Route53StandIn, Route53Fault, RecordSet, HostedZone, ChangeInfo, AliasTarget } from './route53.ts';
export { callsMatching, Faults, LOOPBACK } from './common.ts';
export { RateLimit, Seats } from './limits.ts';
export type { Call, CommonFault, FaultScope } from './common.ts';
export { makePki, testPki } from './tls.ts';
export type { TestPki } from './tls.ts';
export { signRequest, parseAuthorization } from './sigv4.ts';
