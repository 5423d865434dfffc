// The scaling runs of a full benchmark, one run each: a backlog ten times larger (and the
// consumer's peak memory with it), larger payloads, and more consumers in one and in several
// processes. Consumers of the backlog and consumer runs live in forked processes, so that their
// memory is their own and several processes can compete. Each is bounded in time like the
// standard phases; a fill or a consume cut short says so in its notes.

import type { BenchOptions, ScalingRun, SystemId } from './options.js';
import { consumeInProcesses } from './processes.js';
import type { ResultRow } from './results.js';
import { aggregate } from './results.js';
import type { Endpoints, QueueSystem } from './systems/system.js';
import { reason } from './systems/system.js';
import { now } from './timing.js';
import type { Measurement, PhaseSettings } from './workload.js';
import {
  fillQueue,
  measurePublishThenConsume,
  removeQueue,
  throughput,
  waitForBacklog,
} from './workload.js';

/** Messages per call while filling a backlog (not measured). */
const FILL_BATCH = 1000;

/** Payload bytes one payload-size run moves at most: bounds the 64 KB and 1 MB runs. */
const PAYLOAD_RUN_BYTES = 32 * 1024 * 1024;

/**
 * The payload-size and consumer-count runs use a quarter of the standard message count: with
 * sixteen consumers or a megabyte each, that is plenty for a rate, and it keeps them short.
 */
const SMALL_RUN_FRACTION = 4;

/** Fewest messages of a payload-size run, so that a rate means something. */
const PAYLOAD_RUN_MIN_MESSAGES = 50;

export interface ScalingContext {
  id: SystemId;
  system: QueueSystem;
  endpoints: Endpoints;
  options: BenchOptions;
  settings: PhaseSettings;
  queueName: (phase: string) => string;
  log: (text: string) => void;
}

function label(bytes: number): string {
  return bytes >= 1_000_000 ? `${bytes / 1_000_000}MB` : `${bytes / 1024}KB`;
}

export async function runScaling(context: ScalingContext): Promise<ResultRow[]> {
  const rows: ResultRow[] = [];
  const steps: [ScalingRun, () => Promise<ResultRow[]>][] = [
    ['backlog', () => backlogRuns(context)],
    ['payload', () => payloadRuns(context)],
    ['consumers', () => consumerRuns(context)],
  ];
  for (const [name, step] of steps) {
    if (!context.options.scalingRuns.includes(name)) {
      continue;
    }
    try {
      rows.push(...(await step()));
    } catch (err) {
      context.system.warnings.push(`scaling ${name}: ${reason(err)}`);
      context.log(`  scaling ${name} failed: ${reason(err)}`);
    }
  }
  return rows;
}

function row(
  context: ScalingContext,
  measurement: Measurement,
  scenario: string,
  overrides: Partial<Pick<ResultRow, 'payloadBytes' | 'consumers' | 'processes'>> = {},
): ResultRow {
  const { settings, system } = context;
  return aggregate(context.id, [measurement], {
    scenario,
    durability: system.durability,
    storage: system.storage,
    payloadBytes: overrides.payloadBytes ?? settings.payloadBytes,
    concurrency: settings.concurrency,
    consumers: overrides.consumers ?? 1,
    processes: overrides.processes ?? 1,
    inflight: settings.inflight,
    batchSize: settings.batchSize,
  });
}

/** Fills a queue, then consumes it with `consumers` consumers spread over `processes`. */
async function consumeBacklog(
  context: ScalingContext,
  queue: string,
  backlog: number,
  consumers: number,
  processes: number,
  timeoutMs: number,
) {
  const { system, options, settings } = context;
  await system.prepare(queue);
  try {
    const filled = await fillQueue(
      system,
      queue,
      backlog,
      settings.payloadBytes,
      FILL_BATCH,
      now() + options.scalingFillTimeoutMs,
    );
    const waiting = await waitForBacklog(system, queue, filled, now() + settings.phaseTimeoutMs);
    const target = Math.min(waiting, filled);
    const result = await consumeInProcesses({
      id: context.id,
      endpoints: context.endpoints,
      queue,
      target,
      processes,
      consumersPerProcess: Math.max(1, Math.round(consumers / processes)),
      concurrency: settings.concurrency,
      timeoutMs,
    });
    const measurement = throughput(
      'consume',
      result.distinct,
      target,
      result.seconds,
      result.duplicates,
    );
    if (filled < backlog) {
      measurement.notes.push(`the fill stopped at ${filled} of ${backlog} messages (time limit)`);
    }
    if (system.fillNote) {
      measurement.notes.push(system.fillNote);
    }
    system.warnings.push(...result.warnings);
    return { measurement, result };
  } finally {
    await removeQueue(system, queue);
  }
}

/**
 * The large backlog, consumed by one consumer in a process of its own: its rate (to set against
 * the standard run's consume figure) and that process's peak RSS.
 */
async function backlogRuns(context: ScalingContext): Promise<ResultRow[]> {
  const { options } = context;
  const backlog = options.scalingBacklog;
  context.log(`  scaling: backlog of ${backlog}`);
  const { measurement, result } = await consumeBacklog(
    context,
    context.queueName(`backlog${backlog}`),
    backlog,
    1,
    1,
    options.scalingConsumeTimeoutMs,
  );
  const scenario = `backlog=${backlog}`;
  const rss = result.maxRssBytes[0] ?? Number.NaN;
  const before = Math.round((result.readyRssBytes[0] ?? 0) / 2 ** 20);
  return [
    row(context, measurement, scenario),
    row(
      context,
      {
        metric: 'worker-peak-rss',
        value: rss,
        unit: 'bytes',
        count: measurement.count,
        target: measurement.target,
        capped: measurement.capped,
        duplicates: 0,
        notes: [`RSS ${before} MiB once connected, before consuming`],
      },
      scenario,
    ),
  ];
}

async function payloadRuns(context: ScalingContext): Promise<ResultRow[]> {
  const { options, settings } = context;
  const rows: ResultRow[] = [];
  for (const payloadBytes of options.scalingPayloadBytes) {
    const messages = Math.min(
      Math.ceil(options.messages / SMALL_RUN_FRACTION),
      Math.max(PAYLOAD_RUN_MIN_MESSAGES, Math.floor(PAYLOAD_RUN_BYTES / payloadBytes)),
    );
    context.log(`  scaling: payload ${label(payloadBytes)} x ${messages}`);
    const measurements = await measurePublishThenConsume(
      context.system,
      context.queueName(`payload${payloadBytes}`),
      { ...settings, messages, payloadBytes },
    );
    for (const measurement of measurements) {
      const megabytes = (measurement.value * payloadBytes) / 1e6;
      measurement.notes.push(`${megabytes.toFixed(1)} MB/s of payload`);
      rows.push(row(context, measurement, `payload=${label(payloadBytes)}`, { payloadBytes }));
    }
  }
  return rows;
}

async function consumerRuns(context: ScalingContext): Promise<ResultRow[]> {
  const { options, settings } = context;
  const rows: ResultRow[] = [];
  for (const processes of options.scalingProcesses) {
    for (const consumers of options.scalingConsumers) {
      if (consumers < processes) {
        continue;
      }
      context.log(`  scaling: ${consumers} consumers in ${processes} processes`);
      const { measurement } = await consumeBacklog(
        context,
        context.queueName(`c${consumers}p${processes}`),
        Math.ceil(options.messages / SMALL_RUN_FRACTION),
        consumers,
        processes,
        settings.phaseTimeoutMs,
      );
      rows.push(
        row(context, measurement, `consumers=${consumers} processes=${processes}`, {
          consumers,
          processes,
        }),
      );
    }
  }
  return rows;
}
