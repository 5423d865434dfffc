// The chart: throughput and latency by system, as one SVG drawn here (no chart library).
// Both panels use log scales: the systems differ by three orders of magnitude.

import type { ResultRow, SkippedRow } from './results.js';
import { idOf } from './results.js';
import { formatValue } from './report.js';
import type { Metric } from './workload.js';
import { LATENCY_METRICS, THROUGHPUT_METRICS } from './workload.js';

const WIDTH = 1100;
const LABEL_WIDTH = 230;
const RIGHT_MARGIN = 90;
const BAR_HEIGHT = 9;
const BAR_GAP = 2;
const GROUP_GAP = 12;
const PANEL_HEADER = 66;

const COLORS: Record<string, string> = {
  publish: '#4e79a7',
  'publish-batch': '#a0cbe8',
  consume: '#f28e2b',
  'end-to-end': '#59a14f',
  'latency-p50': '#76b7b2',
  'latency-p95': '#edc948',
  'latency-p99': '#e15759',
};

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

interface Panel {
  title: string;
  metrics: Metric[];
  unit: string;
  minimum: number;
}

function drawPanel(
  panel: Panel,
  top: number,
  ids: string[],
  rows: ResultRow[],
  skipped: SkippedRow[],
): { svg: string[]; height: number } {
  const values = rows
    .filter((row) => panel.metrics.includes(row.metric) && Number.isFinite(row.value))
    .map((row) => row.value);
  const maximum = Math.max(panel.minimum * 10, ...values);
  const low = Math.log10(panel.minimum);
  const high = Math.ceil(Math.log10(maximum));
  const plotWidth = WIDTH - LABEL_WIDTH - RIGHT_MARGIN;
  const x = (value: number): number =>
    LABEL_WIDTH +
    (Math.max(0, Math.log10(Math.max(value, panel.minimum)) - low) / (high - low)) * plotWidth;
  const groupHeight = panel.metrics.length * (BAR_HEIGHT + BAR_GAP) + GROUP_GAP;
  const height = PANEL_HEADER + ids.length * groupHeight + 10;
  const svg: string[] = [];

  svg.push(`<text x="10" y="${top + 20}" class="panel">${escape(panel.title)}</text>`);
  panel.metrics.forEach((metric, i) => {
    const lx = LABEL_WIDTH + i * 150;
    svg.push(`<rect x="${lx}" y="${top + 30}" width="12" height="12" fill="${COLORS[metric]}"/>`);
    svg.push(`<text x="${lx + 17}" y="${top + 40}" class="small">${escape(metric)}</text>`);
  });
  const plotTop = top + PANEL_HEADER;
  const plotBottom = top + height - 10;
  for (let power = Math.ceil(low); power <= high; power += 1) {
    const gx = x(10 ** power);
    svg.push(`<line x1="${gx}" y1="${plotTop - 6}" x2="${gx}" y2="${plotBottom}" class="grid"/>`);
    const label = 10 ** power >= 1 ? (10 ** power).toLocaleString('en-US') : String(10 ** power);
    svg.push(`<text x="${gx}" y="${plotTop - 9}" class="axis">${label}</text>`);
  }

  ids.forEach((id, index) => {
    const groupTop = plotTop + index * groupHeight;
    const mailbus = id.startsWith('mailbus/');
    svg.push(
      `<text x="${LABEL_WIDTH - 8}" y="${groupTop + groupHeight / 2}" class="${mailbus ? 'label own' : 'label'}">${escape(id)}</text>`,
    );
    const skip = skipped.find((row) => idOf(row) === id);
    if (skip) {
      svg.push(
        `<text x="${LABEL_WIDTH + 4}" y="${groupTop + groupHeight / 2}" class="skipped">skipped: ${escape(skip.reason.slice(0, 110))}</text>`,
      );
      return;
    }
    panel.metrics.forEach((metric, i) => {
      const row = rows.find((r) => idOf(r) === id && r.metric === metric && r.scenario === '');
      const y = groupTop + i * (BAR_HEIGHT + BAR_GAP);
      if (!row || !Number.isFinite(row.value)) {
        return;
      }
      const end = x(row.value);
      svg.push(
        `<rect x="${LABEL_WIDTH}" y="${y}" width="${Math.max(1, end - LABEL_WIDTH).toFixed(1)}" height="${BAR_HEIGHT}" fill="${COLORS[metric]}"/>`,
      );
      const text = formatValue(row.value, row.unit) + (row.capped ? '*' : '');
      svg.push(
        `<text x="${(end + 4).toFixed(1)}" y="${y + BAR_HEIGHT - 1}" class="value">${text}</text>`,
      );
    });
  });
  return { svg, height };
}

export function chartSvg(
  rows: ResultRow[],
  skipped: SkippedRow[],
  ids: string[],
  subtitle: string,
): string {
  const throughput = drawPanel(
    {
      title: 'Throughput, messages per second (log scale; higher is better)',
      metrics: THROUGHPUT_METRICS,
      unit: 'msg/s',
      minimum: 1,
    },
    60,
    ids,
    rows,
    skipped,
  );
  const latency = drawPanel(
    {
      title: 'Latency, publish call to handler start, ms (log scale; lower is better)',
      metrics: LATENCY_METRICS,
      unit: 'ms',
      minimum: 0.1,
    },
    60 + throughput.height + 20,
    ids,
    rows,
    skipped,
  );
  const height = 60 + throughput.height + 20 + latency.height + 30;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    '<style>',
    '.title{font-size:18px;font-weight:bold}.sub{font-size:11px;fill:#555}',
    '.panel{font-size:14px;font-weight:bold}.small{font-size:11px}',
    '.label{font-size:12px;text-anchor:end;dominant-baseline:middle}.own{font-weight:bold}',
    '.value{font-size:9px;fill:#333}.axis{font-size:10px;text-anchor:middle;fill:#666}',
    '.grid{stroke:#ddd;stroke-width:1}.skipped{font-size:11px;fill:#999;dominant-baseline:middle}',
    '</style>',
    `<rect width="${WIDTH}" height="${height}" fill="white"/>`,
    '<text x="10" y="26" class="title">mailbus and its peers: throughput and latency by system</text>',
    `<text x="10" y="44" class="sub">${escape(subtitle)}</text>`,
    ...throughput.svg,
    ...latency.svg,
    `<text x="10" y="${height - 10}" class="sub">* cut short by the phase time limit: the rate of what was done, or a lower bound for latency. Durability differs per system: see the benchmark's output.</text>`,
    '</svg>',
    '',
  ].join('\n');
}
