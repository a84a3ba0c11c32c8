// Loaded by the bundle's launcher (scripts/build.ts) before the core, so before any schema exists: zod's parsers run
// without generating code.
// zod 4 compiles a fast-path parser for each object schema (new Function) on its first parse; a run parses each schema a
// few times, so that compile is pure cost (a W1 no-op spent ~10 % of its CPU in generateFastpass and its compile). The
// setting is read when a schema is made, so it must come before every module that makes one.
import { z } from 'zod';

z.config({ jitless: true });
