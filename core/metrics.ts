/** Prometheus metrics: a tiny registry of counters, gauges and histograms rendered in the text exposition format 0.0.4. */

type Labels = Record<string, string | number>;

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return "";
  return "{" + keys.map((k) => `${k}="${String(labels[k]).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`).join(",") + "}";
}

/** A monotonically increasing counter per label set. */
export class Counter {
  readonly values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}
  inc(labels: Labels = {}, n = 1): void {
    const k = labelKey(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + n);
  }
  /** A pre-bound incrementer for one label set: the label key is built once (for per-request hot paths). */
  bind(labels: Labels = {}): (n?: number) => void {
    const k = labelKey(labels);
    return (n = 1) => {
      this.values.set(k, (this.values.get(k) ?? 0) + n);
    };
  }
  render(): string {
    let s = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} counter\n`;
    for (const [k, v] of this.values) s += `${this.name}${k} ${v}\n`;
    return s;
  }
}

/** A gauge whose value is read at scrape time from `read`, or set explicitly. */
export class Gauge {
  readonly values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string, readonly read?: () => Array<[Labels, number]>) {}
  set(labels: Labels, v: number): void {
    this.values.set(labelKey(labels), v);
  }
  render(): string {
    let s = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} gauge\n`;
    if (this.read) for (const [l, v] of this.read()) s += `${this.name}${labelKey(l)} ${v}\n`;
    for (const [k, v] of this.values) s += `${this.name}${k} ${v}\n`;
    return s;
  }
}

/** A histogram with fixed upper bounds (seconds for latencies). */
export class Histogram {
  readonly series = new Map<string, { buckets: number[]; sum: number; count: number; labels: Labels }>();
  constructor(readonly name: string, readonly help: string, readonly bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]) {}
  observe(labels: Labels, v: number): void {
    const k = labelKey(labels);
    let s = this.series.get(k);
    if (!s) this.series.set(k, (s = { buckets: this.bounds.map(() => 0), sum: 0, count: 0, labels }));
    for (let i = 0; i < this.bounds.length; i++) if (v <= this.bounds[i]) s.buckets[i]++;
    s.sum += v;
    s.count++;
  }
  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} histogram\n`;
    for (const s of this.series.values()) {
      this.bounds.forEach((b, i) => (out += `${this.name}_bucket${labelKey({ ...s.labels, le: b })} ${s.buckets[i]}\n`));
      out += `${this.name}_bucket${labelKey({ ...s.labels, le: "+Inf" })} ${s.count}\n`;
      out += `${this.name}_sum${labelKey(s.labels)} ${s.sum}\n${this.name}_count${labelKey(s.labels)} ${s.count}\n`;
    }
    return out;
  }
}

/** Every metric the vault exports. One place, so names stay consistent (`vault_*`). */
export const metrics = {
  requests: new Counter("vault_http_requests_total", "HTTP requests by repository and status"),
  bytesServed: new Counter("vault_bytes_served_total", "Response body bytes served, by repository"),
  cache: new Counter("vault_cache_results_total", "Cache results by repository and result (HIT, MISS, REVALIDATED, STALE, NEGATIVE)"),
  upstreamErrors: new Counter("vault_upstream_errors_total", "Upstream failures by repository and kind"),
  upstreamLatency: new Histogram("vault_upstream_latency_seconds", "Time to upstream response headers, by repository"),
  upstreamRequests: new Counter("vault_upstream_requests_total", "Upstream requests by repository and status"),
  poolQueue: new Gauge("vault_pool_queue_length", "Tasks waiting in the worker pool"),
  poolUtilization: new Gauge("vault_pool_utilization", "Worker pool utilisation, 0..1"),
  poolTasks: new Counter("vault_pool_tasks_total", "Tasks run on the worker pool's threads, by task and outcome (ok, error)"),
  tailHashed: new Counter("vault_tail_hashed_bytes_total", "Download bytes hashed on the tail-hash thread instead of the event loop"),
  inflight: new Gauge("vault_inflight_downloads", "Upstream downloads in flight"),
  retentionRemoved: new Counter("vault_retention_removed_total", "Files removed by retention policies, by repository and reason (max_age, unused, keep_versions, quota)"),
  retentionRemovedBytes: new Counter("vault_retention_removed_bytes_total", "Bytes of the files removed by retention policies, by repository and reason"),
  gcBlobsRemoved: new Counter("vault_gc_blobs_removed_total", "Unreferenced blobs deleted from the blob store by gc sweeps"),
  gcBytesFreed: new Counter("vault_gc_freed_bytes_total", "Bytes freed in the blob store by gc sweeps"),
};

/** Renders all metrics in Prometheus text format. `extra` gauges are evaluated at call time. */
export function renderMetrics(): string {
  return Object.values(metrics).map((m) => m.render()).join("");
}
