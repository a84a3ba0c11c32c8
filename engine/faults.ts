// Test-only fault points: MESHVM_TEST_FAULT=<point>=<ref> SIGKILLs the run there, run from the sources only (never the build).

/** Read only when this module runs from its .ts source: in the bundle and the executable the hook is inert. */
const FROM_SOURCES = import.meta.url.endsWith('/engine/faults.ts');

/** SIGKILLs this process when the test asked for a kill at this point of this resource (e.g. kill-after-apply=file[/x]). */
export function faultPoint(point: string, ref: string): void {
  if (FROM_SOURCES && process.env.MESHVM_TEST_FAULT === `${point}=${ref}`) process.kill(process.pid, 'SIGKILL');
}
