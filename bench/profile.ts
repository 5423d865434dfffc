// Summarises a V8 CPU profile (node --cpu-prof): the functions with the most self time, and
// self time by where the code lives (mailbus's own modules, each npm package, Node itself).
// Locations in the benchmark's compiled copy of src/ are mapped back to src/*.ts lines.
//
//   node dist-bench/bench/profile.js FILE.cpuprofile [TOP]

import * as fs from 'node:fs';
import { SourceMap } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  /** The function, and for native or Node-internal code the nearest caller of ours. */
  name: string;
  location: string;
  /** Whose code caused the time: a mailbus module, an npm package, the harness, GC. */
  area: string;
  selfMs: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Sampled time outside (idle): what the process actually spent on the CPU or in GC. */
  busyMs: number;
  top: ProfileEntry[];
  areas: { area: string; selfMs: number }[];
}

const sourceMaps = new Map<string, SourceMap | undefined>();

function sourceMapOf(file: string): SourceMap | undefined {
  if (!sourceMaps.has(file)) {
    let map: SourceMap | undefined;
    try {
      map = new SourceMap(JSON.parse(fs.readFileSync(`${file}.map`, 'utf8')));
    } catch {
      map = undefined;
    }
    sourceMaps.set(file, map);
  }
  return sourceMaps.get(file);
}

/** Where a frame's code lives, as a short path, and which area it belongs to. */
function place(frame: CallFrame): { location: string; area: string } {
  const url = frame.url;
  if (!url) {
    return {
      location: '',
      area: frame.functionName.startsWith('(') ? frame.functionName : 'native',
    };
  }
  if (url.startsWith('node:')) {
    return { location: url, area: 'node internals' };
  }
  const file = url.startsWith('file://') ? fileURLToPath(url) : url;
  const modules = file.lastIndexOf('/node_modules/');
  if (modules !== -1) {
    const rest = file.slice(modules + '/node_modules/'.length).split('/');
    const name = rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : (rest[0] ?? '?');
    return { location: `${rest.join('/')}:${frame.lineNumber + 1}`, area: `npm ${name}` };
  }
  const compiled = file.indexOf('/dist-bench/');
  if (compiled !== -1) {
    const relative = file.slice(compiled + '/dist-bench/'.length);
    const entry = sourceMapOf(file)?.findEntry(frame.lineNumber, frame.columnNumber);
    const source =
      entry && 'originalSource' in entry && entry.originalSource
        ? `${path.relative(path.join(file.slice(0, compiled)), fileURLToPath(new URL(entry.originalSource, url)))}:${entry.originalLine + 1}`
        : `${relative}:${frame.lineNumber + 1}`;
    const area = relative.startsWith('src/')
      ? `mailbus ${relative.split('/').slice(0, -1).join('/') || 'src'}`
      : relative.startsWith('bench/')
        ? 'benchmark harness'
        : `repo ${relative.split('/')[0]}`;
    return { location: source, area };
  }
  return { location: `${file}:${frame.lineNumber + 1}`, area: 'other' };
}

export function summariseProfile(file: string, top = 25): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) {
      parentOf.set(child, node.id);
    }
  }
  // Native and Node-internal time belongs to whoever called it: the nearest frame with a file.
  const callerOf = (id: number): CallFrame | undefined => {
    let current = parentOf.get(id);
    for (let depth = 0; current !== undefined && depth < 200; depth += 1) {
      const frame = byId.get(current)?.callFrame;
      if (frame?.url && !frame.url.startsWith('node:')) {
        return frame;
      }
      current = parentOf.get(current);
    }
    return undefined;
  };
  const selfUs = new Map<number, number>();
  // Each delta is the time before its sample: charge it to the sample that follows it.
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, delta));
  });

  const entries = new Map<string, ProfileEntry>();
  let idleUs = 0;
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) {
      continue;
    }
    totalUs += us;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    let { location, area } = place(frame);
    let name = frame.functionName || '(anonymous)';
    const borrowed = area === 'native' || area === 'node internals';
    const caller = borrowed ? callerOf(id) : undefined;
    if (caller) {
      ({ location, area } = place(caller));
      name = `${name} <- ${caller.functionName || '(anonymous)'}`;
    }
    const key = `${name}@${location}`;
    const entry = entries.get(key) ?? { name, location, area, selfMs: 0 };
    entry.selfMs += us / 1000;
    entries.set(key, entry);
  }

  const areas = new Map<string, number>();
  for (const entry of entries.values()) {
    areas.set(entry.area, (areas.get(entry.area) ?? 0) + entry.selfMs);
  }
  return {
    totalMs: totalUs / 1000,
    busyMs: (totalUs - idleUs) / 1000,
    top: [...entries.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, top),
    areas: [...areas]
      .map(([area, selfMs]) => ({ area, selfMs }))
      .sort((a, b) => b.selfMs - a.selfMs),
  };
}

export function formatSummary(title: string, summary: ProfileSummary): string {
  const percent = (ms: number): string =>
    `${((100 * ms) / summary.busyMs).toFixed(1)}%`.padStart(6);
  const lines = [
    `${title}: ${(summary.busyMs / 1000).toFixed(1)} s busy of ${(summary.totalMs / 1000).toFixed(1)} s sampled`,
    '  self time by area (native and Node-internal time charged to the code that called it):',
    ...summary.areas
      .slice(0, 12)
      .map((a) => `    ${percent(a.selfMs)} ${a.selfMs.toFixed(0).padStart(7)} ms  ${a.area}`),
    '  top functions by self time:',
    ...summary.top.map(
      (e) =>
        `    ${percent(e.selfMs)} ${e.selfMs.toFixed(0).padStart(7)} ms  ${e.name}  ${e.location}`,
    ),
  ];
  return lines.join('\n');
}

// Run directly: summarise the files named on the command line.
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node dist-bench/bench/profile.js FILE.cpuprofile [TOP]');
    process.exit(2);
  }
  console.log(formatSummary(path.basename(file), summariseProfile(file, Number(top ?? 25))));
}
