// A small metrics registry (counters, gauges, histograms with labels) rendered as Prometheus text format 0.0.4.
//
// Built for the hot path: a label set is resolved once, with `labels(...)`, into a child object the caller
// keeps; the child's sample prefix (`name{a="x",b="y"}`) is rendered when the child is made, so an increment or
// an observation is a number update with no string building and no allocation. Gauges that mirror state owned
// elsewhere (Consul watches, clusters) are set by collectors, which run just before each render.

import { MeshError } from '../errors';

/** The Content-Type of the text exposition format this registry renders. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Prometheus' default buckets (seconds). */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Label value escaping: backslash, double quote and line feed. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escaping: backslash and line feed. */
export function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A sample value as the format writes it (Go float syntax: NaN, +Inf, -Inf). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

const bug = (why: string): MeshError => new MeshError('MESH_ERR_INTERNAL', `metrics: ${why}`);

/** Shared by every kind: the name, help, label names, and the children by label values. */
abstract class Family<C> {
  private readonly children = new Map<string, C>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    private readonly type: 'counter' | 'gauge' | 'histogram',
  ) {
    if (!METRIC_NAME.test(name)) throw bug(`invalid metric name ${JSON.stringify(name)}`);
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__')) throw bug(`${name}: invalid label name ${JSON.stringify(l)}`);
    }
    if (new Set(labelNames).size !== labelNames.length) throw bug(`${name}: a label name is listed twice`);
  }

  /** The child for these label values (in the order of labelNames), made on first use. Keep it: lookups cost a join. */
  labels(...values: string[]): C {
    if (values.length !== this.labelNames.length) throw bug(`${this.name} takes ${this.labelNames.length} label value(s) (${this.labelNames.join(', ')}), got ${values.length}`);
    const key = values.join('\u0000');
    let child = this.children.get(key);
    if (!child) {
      const pairs = this.labelNames.map((n, i) => `${n}="${escapeLabelValue(values[i]!)}"`);
      child = this.makeChild(pairs);
      this.children.set(key, child);
    }
    return child;
  }

  /** Forgets the child for these label values (the thing it measured is gone). */
  remove(...values: string[]): void {
    this.children.delete(values.join('\u0000'));
  }

  /** Forgets every child. */
  clear(): void {
    this.children.clear();
  }

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`);
    for (const c of this.children.values()) this.renderChild(c, out);
  }

  protected abstract makeChild(labelPairs: readonly string[]): C;
  protected abstract renderChild(child: C, out: string[]): void;
}

const braces = (pairs: readonly string[]): string => (pairs.length ? `{${pairs.join(',')}}` : '');

/** A value that only goes up. */
export class CounterChild {
  value = 0;
  constructor(readonly prefix: string) {}
  /** @param n must not be negative (a counter never goes down). */
  inc(n = 1): void {
    if (n < 0) throw bug(`counter ${this.prefix} cannot be decreased (inc(${n}))`);
    this.value += n;
  }
}

/** A family whose children are one value each (counters and gauges). */
abstract class ValueFamily<C extends { readonly prefix: string; readonly value: number }> extends Family<C> {
  constructor(name: string, help: string, labelNames: readonly string[], type: 'counter' | 'gauge', private readonly Child: new (prefix: string) => C) {
    super(name, help, labelNames, type);
  }
  protected makeChild(pairs: readonly string[]): C {
    return new this.Child(`${this.name}${braces(pairs)}`);
  }
  protected renderChild(c: C, out: string[]): void {
    out.push(`${c.prefix} ${formatValue(c.value)}`);
  }
}

export class Counter extends ValueFamily<CounterChild> {
  constructor(name: string, help: string, labelNames: readonly string[]) {
    super(name, help, labelNames, 'counter', CounterChild);
  }
}

/** A value that goes up and down. */
export class GaugeChild {
  value = 0;
  constructor(readonly prefix: string) {}
  set(v: number): void {
    this.value = v;
  }
  inc(n = 1): void {
    this.value += n;
  }
  dec(n = 1): void {
    this.value -= n;
  }
}

export class Gauge extends ValueFamily<GaugeChild> {
  constructor(name: string, help: string, labelNames: readonly string[]) {
    super(name, help, labelNames, 'gauge', GaugeChild);
  }
}

/** Observations counted into buckets; the buckets are rendered cumulative, as the format wants. */
export class HistogramChild {
  /** Per bucket (not cumulative), plus one for +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(
    readonly bounds: readonly number[],
    /** `name_bucket{a="x",le="` — the bound and the rest are added at render. */
    readonly bucketPrefix: string,
    /** `{a="x"}` or '' for _sum and _count. */
    readonly labelText: string,
  ) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

export class Histogram extends Family<HistogramChild> {
  constructor(name: string, help: string, labelNames: readonly string[], readonly buckets: readonly number[]) {
    super(name, help, labelNames, 'histogram');
    if (labelNames.includes('le')) throw bug(`${name}: "le" is reserved for histogram buckets`);
    if (buckets.length === 0 || buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= buckets[i - 1]!))) {
      throw bug(`${name}: buckets must be finite and strictly increasing, got [${buckets.join(', ')}]`);
    }
  }
  protected makeChild(pairs: readonly string[]): HistogramChild {
    return new HistogramChild(this.buckets, `${this.name}_bucket{${[...pairs, ''].join(',')}le="`, braces(pairs));
  }
  protected renderChild(c: HistogramChild, out: string[]): void {
    let cumulative = 0;
    for (let i = 0; i < c.bounds.length; i++) {
      cumulative += c.counts[i]!;
      out.push(`${c.bucketPrefix}${formatValue(c.bounds[i]!)}"} ${cumulative}`);
    }
    out.push(`${c.bucketPrefix}+Inf"} ${c.count}`, `${this.name}_sum${c.labelText} ${formatValue(c.sum)}`, `${this.name}_count${c.labelText} ${c.count}`);
  }
}

/** The metrics of one process, rendered in registration order. */
export class MetricsRegistry {
  private readonly families = new Map<string, Family<unknown>>();
  private readonly collectors: (() => void)[] = [];

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.add(new Counter(name, help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.add(new Gauge(name, help, labelNames));
  }

  histogram(name: string, help: string, labelNames: readonly string[] = [], buckets: readonly number[] = DEFAULT_BUCKETS): Histogram {
    return this.add(new Histogram(name, help, labelNames, buckets));
  }

  /** Runs `fn` before every render, to set gauges from state kept elsewhere. */
  collect(fn: () => void): void {
    this.collectors.push(fn);
  }

  /** Every family in the text exposition format 0.0.4 (ends with a line feed). */
  render(): string {
    for (const fn of this.collectors) fn();
    const out: string[] = [];
    for (const f of this.families.values()) f.render(out);
    return out.length ? `${out.join('\n')}\n` : '';
  }

  private add<F extends Family<unknown>>(f: F): F {
    if (this.families.has(f.name)) throw bug(`metric ${f.name} is registered twice`);
    this.families.set(f.name, f);
    return f;
  }
}
