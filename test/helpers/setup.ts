// Loaded by ava in every worker before the tests (package.json "ava.require"): every meshvm a test starts (sources,
// bundle, executable) keeps V8's compile cache in the checkout (node_modules/.cache, root-owned like the checkout), not
// in the host's /var/cache/meshvm/compile-cache, which a root meshvm uses by default: tests leave the host's files as they were.
import path from 'node:path';

process.env.MESHVM_COMPILE_CACHE ??= path.resolve(import.meta.dirname, '../../node_modules/.cache/meshvm-compile-cache');
