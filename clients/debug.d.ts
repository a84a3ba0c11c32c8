// The one part of the `debug` package's API meshvm uses (clients/no-debug.ts); the package ships no types.
declare module 'debug' {
  const createDebug: { disable(): string };
  export default createDebug;
}
