// The benchmark's results: one row per system, metric and scenario (the median over the runs),
// rows for systems that could not be measured, and the mailbus/peer ratios.

import type { SystemId } from './options.js';
import { median } from './timing.js';
import type { Measurement, Metric } from './workload.js';
import { LATENCY_METRICS } from './workload.js';

export interface Parameters {
  payloadBytes: number;
  concurrency: number;
  consumers: number;
  processes: number;
  inflight: number;
  batchSize: number;
}

export interface ResultRow extends Parameters {
  type: 'result';
  system: string;
  mode: string;
  metric: Metric;
  value: number;
  unit: Measurement['unit'];
  /** '' for the standard workload; otherwise what the scaling run changed. */
  scenario: string;
  runs: number;
  values: number[];
  /** Messages the median run's figure is made of, and how many it meant to do. */
  messages: number;
  target: number;
  capped: boolean;
  duplicates: number;
  durability: string;
  storage: string;
  notes: string[];
}

export interface SkippedRow {
  type: 'skipped';
  system: string;
  mode: string;
  /** '*' when the whole system was skipped, else the phase that failed. */
  metric: string;
  value: null;
  unit: null;
  reason: string;
}

export function splitId(id: SystemId): { system: string; mode: string } {
  const [system, mode] = id.split('/') as [string, string];
  return { system, mode };
}

export function idOf(row: { system: string; mode: string }): string {
  return `${row.system}/${row.mode}`;
}

export function isMailbus(row: { system: string }): boolean {
  return row.system === 'mailbus';
}

/** Lower is better for these. */
export function lowerIsBetter(metric: Metric): boolean {
  return LATENCY_METRICS.includes(metric) || metric === 'worker-peak-rss';
}

/** One figure from several runs: the median, capped if any run was. */
export function aggregate(
  id: SystemId,
  measurements: Measurement[],
  context: Parameters & { scenario: string; durability: string; storage: string },
): ResultRow {
  const first = measurements[0] as Measurement;
  const values = measurements.map((m) => m.value);
  const value = median(values);
  const closest = measurements.reduce((best, m) =>
    Math.abs(m.value - value) < Math.abs(best.value - value) ? m : best,
  );
  return {
    type: 'result',
    ...splitId(id),
    metric: first.metric,
    value,
    unit: first.unit,
    scenario: context.scenario,
    runs: measurements.length,
    values,
    messages: closest.count,
    target: closest.target,
    capped: measurements.some((m) => m.capped),
    duplicates: measurements.reduce((sum, m) => sum + m.duplicates, 0),
    durability: context.durability,
    storage: context.storage,
    payloadBytes: context.payloadBytes,
    concurrency: context.concurrency,
    consumers: context.consumers,
    processes: context.processes,
    inflight: context.inflight,
    batchSize: context.batchSize,
    notes: [...new Set(measurements.flatMap((m) => m.notes))],
  };
}

/** The key a ratio is filed under: the metric, and the scenario when there is one. */
export function ratioKey(row: ResultRow): string {
  return row.scenario ? `${row.metric} [${row.scenario}]` : row.metric;
}

export interface Ratios {
  type: 'ratios';
  basis: string;
  /** metric -> mailbus system -> peer system -> mailbus value / peer value. */
  ratios: Record<string, Record<string, Record<string, number>>>;
}

export function ratios(rows: ResultRow[]): Ratios {
  const result: Ratios['ratios'] = {};
  const byKey = new Map<string, ResultRow[]>();
  for (const row of rows) {
    const key = ratioKey(row);
    byKey.set(key, [...(byKey.get(key) ?? []), row]);
  }
  for (const [key, group] of byKey) {
    const mailbus = group.filter(isMailbus);
    const peers = group.filter((row) => !isMailbus(row));
    if (mailbus.length === 0 || peers.length === 0) {
      continue;
    }
    const table: Record<string, Record<string, number>> = {};
    for (const own of mailbus) {
      const line: Record<string, number> = {};
      for (const peer of peers) {
        if (Number.isFinite(own.value) && Number.isFinite(peer.value) && peer.value !== 0) {
          line[idOf(peer)] = Number((own.value / peer.value).toPrecision(3));
        }
      }
      table[idOf(own)] = line;
    }
    result[key] = table;
  }
  return {
    type: 'ratios',
    basis:
      'mailbus value / peer value, both measured in this run. Throughput (msg/s): above 1 means ' +
      'mailbus is faster. Latency (ms) and memory (bytes): above 1 means mailbus is slower or bigger.',
    ratios: result,
  };
}
