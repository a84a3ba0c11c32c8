// Loaded with --import by the benchmark: records the process's peak RSS (KiB) at exit.
import { writeFileSync } from 'node:fs';

process.on('exit', () => {
  if (process.env.MESHVM_BENCH_RSS) writeFileSync(process.env.MESHVM_BENCH_RSS, String(process.resourceUsage().maxRSS));
});
