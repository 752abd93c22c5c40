// Plain-text output for people: aligned tables and relative times (JSON output is the API's own shape).

/** Writes one line to stdout. */
export const out = (s: string): boolean => process.stdout.write(`${s}\n`);

/** "now", "12s ago", "5m ago", "3h ago", or "never". */
export function ago(iso: string | null, now = Date.now()): string {
  if (!iso) return 'never';
  const s = Math.round((now - Date.parse(iso)) / 1000);
  return s < 2 ? 'now' : s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

/** "in 5m", "in 3h", "EXPIRED", or "-". */
export function until(iso: string | null, now = Date.now()): string {
  if (!iso) return '-';
  const s = Math.round((Date.parse(iso) - now) / 1000);
  if (s <= 0) return 'EXPIRED';
  return s < 120 ? `in ${s}s` : s < 7200 ? `in ${Math.round(s / 60)}m` : `in ${Math.round(s / 3600)}h`;
}

/** Prints rows (the first is the header) in columns two spaces apart. */
export function table(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  for (const r of rows) out(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
}
