// The fact cache of one host: a value computed once and shared by resources, forgotten after any change.

export interface FactCache {
  memo<T>(key: string, compute: () => Promise<T>): Promise<T>;
  /** Forgets every fact (called after anything changed the machine). */
  forget(): void;
}

export function factCache(): FactCache {
  const facts = new Map<string, Promise<unknown>>();
  return {
    memo<T>(key: string, compute: () => Promise<T>): Promise<T> {
      let value = facts.get(key) as Promise<T> | undefined;
      if (!value) {
        value = compute();
        facts.set(key, value);
        // a failed computation is not a fact: the next caller tries again
        value.catch(() => {
          if (facts.get(key) === value) facts.delete(key);
        });
      }
      return value;
    },
    forget: () => facts.clear(),
  };
}
