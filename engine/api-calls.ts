// Counts API calls per service during a run, for the report (vault, kubernetes, route53).
const counts = new Map<string, number>();

export const apiCalls = {
  count(service: string, n = 1): void {
    counts.set(service, (counts.get(service) ?? 0) + n);
  },
  snapshot(): Record<string, number> {
    return Object.fromEntries([...counts].sort());
  },
  reset(): void {
    counts.clear();
  },
};
