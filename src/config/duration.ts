// Durations as users write them ("500ms", "10s", "1h30m", "24h"), parsed once at the edge into milliseconds.

const UNIT_MS: Record<string, number> = { ns: 0.000001, us: 0.001, 'µs': 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)/y;

/**
 * Parses a Go-style duration ("0.5s", "1h30m", "100ms"; Istio's form) into milliseconds, rounded; undefined when
 * `text` is not one. `days: false` refuses the "d" unit, which Go (and so Istio) does not have.
 */
export function parseDuration(text: string, opts: { days?: boolean } = {}): number | undefined {
  const s = text.trim();
  if (s === '' || s === '0') return s === '0' ? 0 : undefined;
  let total = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < s.length) {
    const at = PART.lastIndex;
    const m = PART.exec(s);
    if (!m || m.index !== at || (m[2] === 'd' && opts.days === false)) return undefined;
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
  }
  return Math.round(total);
}

/** Formats milliseconds back into the largest exact unit, for status output ("24h", "10s", "1500ms"). */
export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = UNIT_MS[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
