const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration string such as `500ms`, `30s`, `15m`, `1h`, `7d` (or a compound `1h30m`)
 * into milliseconds. Returns `undefined` when the string is not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const s = text.trim();
  if (!/^(\d+(ms|s|m|h|d))+$/.test(s)) return undefined;
  let total = 0;
  for (const m of s.matchAll(/(\d+)(ms|s|m|h|d)/g)) total += Number(m[1]) * UNITS[m[2]];
  return total;
}

/** Formats milliseconds back into the largest whole unit (`900000` → `15m`). */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % size === 0 && ms >= size) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
