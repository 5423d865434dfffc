// The terminal report: the main table, durability and storage per row, notes, the ratio
// matrices and the scaling tables.

import type { Ratios, ResultRow, SkippedRow } from './results.js';
import { idOf, isMailbus } from './results.js';
import type { Metric } from './workload.js';
import { LATENCY_METRICS, THROUGHPUT_METRICS } from './workload.js';

export function formatValue(value: number, unit: string): string {
  if (!Number.isFinite(value)) {
    return '-';
  }
  if (unit === 'bytes') {
    return `${(value / 2 ** 20).toFixed(0)} MiB`;
  }
  if (value < 10) {
    return value.toFixed(1);
  }
  return Math.round(value).toLocaleString('en-US');
}

export function table(header: string[], lines: string[][]): string {
  const widths = header.map((title, i) =>
    Math.max(title.length, ...lines.map((line) => (line[i] ?? '').length)),
  );
  const render = (cells: string[]): string =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const rule = widths.map((width) => '-'.repeat(width)).join('  ');
  return [render(header), rule, ...lines.map(render)].join('\n');
}

function cell(rows: ResultRow[], id: string, metric: Metric, scenario = ''): string {
  const row = rows.find((r) => idOf(r) === id && r.metric === metric && r.scenario === scenario);
  if (!row) {
    return '';
  }
  return formatValue(row.value, row.unit) + (row.capped ? '*' : '');
}

const SHORT: Record<string, string> = {
  publish: 'publish',
  'publish-batch': 'batch pub',
  consume: 'consume',
  'end-to-end': 'end-to-end',
  'latency-p50': 'p50 ms',
  'latency-p95': 'p95 ms',
  'latency-p99': 'p99 ms',
};

export function mainTable(rows: ResultRow[], skipped: SkippedRow[], ids: string[]): string {
  const base = rows.filter((row) => row.scenario === '');
  const metrics = [...THROUGHPUT_METRICS, ...LATENCY_METRICS];
  const lines = ids.map((id) => {
    const skip = skipped.find((row) => idOf(row) === id);
    if (skip) {
      return [id, ...metrics.map(() => ''), 'skipped'];
    }
    const storage = base.find((row) => idOf(row) === id)?.storage ?? '';
    return [
      id,
      ...metrics.map((metric) => cell(base, id, metric)),
      storage.includes('tmpfs') ? 'tmpfs' : storage.includes('disk') ? 'disk' : '?',
    ];
  });
  return table(
    ['system (msg/s; latency ms)', ...metrics.map((m) => SHORT[m] ?? m), 'data on'],
    lines,
  );
}

export function rowDetails(
  rows: ResultRow[],
  skipped: SkippedRow[],
  warnings: Map<string, string[]>,
) {
  const out: string[] = ['Durability and storage per row:'];
  const seen = new Set<string>();
  for (const row of rows) {
    const id = idOf(row);
    if (seen.has(id)) {
      continue;
    }
    seen.add(id);
    out.push(`  ${id}`);
    out.push(`      durability: ${row.durability}`);
    out.push(`      storage:    ${row.storage}`);
  }
  for (const row of skipped) {
    out.push(`  ${idOf(row)}: skipped, ${row.reason}`);
  }
  // Payload MB/s and RSS before consuming are shown in the scaling tables.
  const informational = (note: string): boolean =>
    / MB\/s of payload$|^RSS .* before consuming$/.test(note);
  const notes = rows.filter(
    (row) => row.capped || row.duplicates > 0 || row.notes.some((note) => !informational(note)),
  );
  if (notes.length > 0) {
    out.push(
      '',
      'Notes (* = phase cut short by its time limit; the figure is the rate of what it did):',
    );
    for (const row of notes) {
      const parts = [
        `${row.messages} of ${row.target} messages`,
        ...(row.duplicates > 0 ? [`${row.duplicates} duplicate deliveries`] : []),
        ...row.notes.filter((note) => !informational(note)),
      ];
      const scenario = row.scenario ? ` [${row.scenario}]` : '';
      out.push(`  ${idOf(row)} ${row.metric}${scenario}: ${parts.join('; ')}`);
    }
  }
  for (const [id, list] of warnings) {
    if (list.length > 0) {
      out.push(`  ${id} warnings: ${[...new Set(list)].slice(0, 5).join(' | ')}`);
    }
  }
  return out.join('\n');
}

export function ratioTables(result: Ratios): string {
  const out: string[] = [`Ratios, ${result.basis}`];
  for (const [key, table_] of Object.entries(result.ratios)) {
    if (key.includes('[')) {
      continue;
    }
    const mailbus = Object.keys(table_);
    const peers = [...new Set(mailbus.flatMap((own) => Object.keys(table_[own] ?? {})))];
    out.push('');
    out.push(
      table(
        [key, ...peers],
        mailbus.map((own) => [
          own,
          ...peers.map((peer) => {
            const ratio = table_[own]?.[peer];
            return ratio === undefined ? '' : ratio.toPrecision(3);
          }),
        ]),
      ),
    );
  }
  return out.join('\n');
}

/**
 * The scaling runs: one table per kind of scenario, systems down, scenarios across. The large
 * backlog's consume rate stands beside the standard run's, with their ratio.
 */
export function scalingTables(rows: ResultRow[]): string {
  const scaling = rows.filter((row) => row.scenario !== '');
  if (scaling.length === 0) {
    return '';
  }
  const kinds = new Map<string, ResultRow[]>();
  for (const row of scaling) {
    const kind = `${row.metric} by ${row.scenario.replace(/=[^ ]*/g, '')}`;
    kinds.set(kind, [...(kinds.get(kind) ?? []), row]);
  }
  const out: string[] = ['Scaling runs (one run each; * = cut short by the time limit):'];
  for (const [kind, group] of kinds) {
    const scenarios = [...new Set(group.map((row) => row.scenario))];
    const ids = [...new Set(group.map(idOf))].sort(
      (a, b) => Number(!a.startsWith('mailbus')) - Number(!b.startsWith('mailbus')),
    );
    const withBaseline = kind === 'consume by backlog';
    const shown = (row: ResultRow | undefined): string =>
      row ? formatValue(row.value, row.unit) + (row.capped ? '*' : '') : '';
    const lines = ids.map((id) => {
      const cells = scenarios.map((scenario) => {
        const row = group.find((r) => idOf(r) === id && r.scenario === scenario);
        if (!row) {
          return '';
        }
        if (withBaseline) {
          return `${shown(row)} (n=${row.messages.toLocaleString('en-US')})`;
        }
        const extra = row.notes
          .map((note) =>
            / MB\/s of payload$/.exec(note)
              ? note.replace(' of payload', '')
              : /^RSS (\d+ MiB)/.exec(note)?.[1]
                ? `${/^RSS (\d+ MiB)/.exec(note)?.[1]} before`
                : '',
          )
          .filter(Boolean);
        return extra.length > 0 ? `${shown(row)} (${extra.join(', ')})` : shown(row);
      });
      if (!withBaseline) {
        return [id, ...cells];
      }
      const base = rows.find((r) => idOf(r) === id && r.metric === 'consume' && r.scenario === '');
      const large = group.find((r) => idOf(r) === id);
      const ratio = base && large ? (large.value / base.value).toFixed(2) : '';
      const baseCell = base ? `${shown(base)} (n=${base.messages.toLocaleString('en-US')})` : '';
      return [id, baseCell, ...cells, ratio];
    });
    const header = withBaseline
      ? [kind, 'standard run', ...scenarios, 'large/standard']
      : [kind, ...scenarios];
    out.push('');
    out.push(table(header, lines));
  }
  return out.join('\n');
}

export function mailbusFirst(ids: string[]): string[] {
  return [...ids].sort(
    (a, b) =>
      Number(!isMailbus({ system: a.split('/')[0] ?? '' })) -
      Number(!isMailbus({ system: b.split('/')[0] ?? '' })),
  );
}
