// The AWS SDK's default credential chain, re-exported by a static import: a dynamic import() of the package itself (a
// CommonJS module) came out of the ES module bundle as a chunk with only a default export, so the named export was
// undefined there ("fromNodeProviderChain is not a function"); esbuild's interop applies to static imports.
export { fromNodeProviderChain } from '@aws-sdk/credential-providers';
