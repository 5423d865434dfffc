// The measured phases, the same for every system: publish, batch publish of a backlog and its
// consumption, producer and consumers overlapped (end to end), and the latency of single
// messages to an idle consumer. Each phase has a deadline; a phase cut short by it reports the
// rate of what it did and says so (`capped`).

import { makePayload, makePayloads, seqOf } from './payload.js';
import type { BenchHandler, QueueSystem, RunningConsumer } from './systems/system.js';
import { reason } from './systems/system.js';
import { Arrivals, now, percentile, pipelined, sleep, withTimeout } from './timing.js';

export type Metric =
  | 'publish'
  | 'publish-batch'
  | 'consume'
  | 'end-to-end'
  | 'latency-p50'
  | 'latency-p95'
  | 'latency-p99'
  | 'worker-peak-rss';

export const THROUGHPUT_METRICS: Metric[] = ['publish', 'publish-batch', 'consume', 'end-to-end'];
export const LATENCY_METRICS: Metric[] = ['latency-p50', 'latency-p95', 'latency-p99'];

export interface Measurement {
  metric: Metric;
  value: number;
  unit: 'msg/s' | 'ms' | 'bytes';
  /** Messages the figure is made of, and how many the phase meant to do. */
  count: number;
  target: number;
  /** The phase hit its deadline before it was done. */
  capped: boolean;
  duplicates: number;
  notes: string[];
}

export interface PhaseSettings {
  messages: number;
  payloadBytes: number;
  concurrency: number;
  inflight: number;
  batchSize: number;
  phaseTimeoutMs: number;
}

/** How long stopping a consumer may take before the runner gives up on it. */
const STOP_TIMEOUT_MS = 15_000;

/** The end-to-end phase may take this many times the phase limit: it publishes and consumes. */
const END_TO_END_TIMEOUT_FACTOR = 1.5;

/** The longest a warm-up waits for its messages to come back. */
const WARM_UP_TIMEOUT_MS = 3000;

/** How long an idle consumer gets to settle (connect, IDLE, first empty poll) before latency. */
const LATENCY_SETTLE_MS = 500;

/** How often the backlog count is asked while deliveries are still arriving (SMTP). */
const WAITING_POLL_MS = 100;

export function throughput(
  metric: Metric,
  count: number,
  target: number,
  seconds: number,
  duplicates = 0,
): Measurement {
  return {
    metric,
    value: seconds > 0 ? count / seconds : Number.NaN,
    unit: 'msg/s',
    count,
    target,
    capped: count < target,
    duplicates,
    notes: [],
  };
}

/** A handler that records each payload's sequence number. */
function recorder(arrivals: Arrivals): BenchHandler {
  return (payload) => arrivals.record(seqOf(payload));
}

async function startConsumers(
  system: QueueSystem,
  queue: string,
  handler: BenchHandler,
  count: number,
  concurrency: number,
): Promise<RunningConsumer[]> {
  const consumers: RunningConsumer[] = [];
  for (let i = 0; i < count; i += 1) {
    consumers.push(await system.consume(queue, handler, { concurrency }));
  }
  return consumers;
}

export async function stopConsumers(system: QueueSystem, consumers: RunningConsumer[]) {
  const results = await Promise.allSettled(
    consumers.map((consumer) =>
      withTimeout(consumer.stop(), STOP_TIMEOUT_MS, 'stopping a consumer'),
    ),
  );
  for (const result of results) {
    if (result.status === 'rejected') {
      system.warnings.push(reason(result.reason));
    }
  }
}

/** Removes a phase's queue; a failure is a warning, not the end of the run. */
export async function removeQueue(system: QueueSystem, queue: string): Promise<void> {
  try {
    await withTimeout(system.remove(queue), 60_000, `removing ${queue}`);
  } catch (err) {
    system.warnings.push(`cleanup of ${queue}: ${reason(err)}`);
  }
}

/** Polls until `count` messages wait in the queue, or the deadline; returns how many wait. */
export async function waitForBacklog(
  system: QueueSystem,
  queue: string,
  count: number,
  deadline: number,
): Promise<number> {
  let waiting = await system.waiting(queue);
  for (let i = 0; i < 1_000_000 && waiting < count && now() < deadline; i += 1) {
    await sleep(WAITING_POLL_MS);
    waiting = await system.waiting(queue);
  }
  return waiting;
}

/** Publishes and consumes a few messages, unmeasured: connections, JIT, caches. */
export async function warmUp(
  system: QueueSystem,
  queue: string,
  messages: number,
  settings: PhaseSettings,
): Promise<void> {
  await system.prepare(queue);
  const arrivals = new Arrivals();
  const consumers = await startConsumers(
    system,
    queue,
    recorder(arrivals),
    1,
    settings.concurrency,
  );
  try {
    const deadline = now() + Math.min(settings.phaseTimeoutMs, WARM_UP_TIMEOUT_MS);
    for (let first = 0; first < messages && now() < deadline; first += settings.batchSize) {
      const count = Math.min(settings.batchSize, messages - first);
      await system.publishBatch(queue, makePayloads(first, count, settings.payloadBytes));
    }
    await pipelined(Math.min(messages, 50), settings.inflight, deadline, (i) =>
      system.publish(queue, makePayload(messages + i, settings.payloadBytes)),
    );
    await arrivals.reached(messages + Math.min(messages, 50), deadline);
  } finally {
    await stopConsumers(system, consumers);
    await removeQueue(system, queue);
  }
}

/** One producer, `inflight` publish calls outstanding. */
export async function measurePublish(
  system: QueueSystem,
  queue: string,
  settings: PhaseSettings,
): Promise<Measurement> {
  await system.prepare(queue);
  try {
    const started = now();
    const done = await pipelined(
      settings.messages,
      settings.inflight,
      started + settings.phaseTimeoutMs,
      (i) => system.publish(queue, makePayload(i, settings.payloadBytes)),
    );
    const measurement = throughput('publish', done, settings.messages, (now() - started) / 1000);
    // Unmeasured: let deliveries that follow an accepted publish (SMTP) land before the queue
    // is removed, so that they do not load the server during the next phase.
    await waitForBacklog(system, queue, done, now() + settings.phaseTimeoutMs);
    return measurement;
  } finally {
    await removeQueue(system, queue);
  }
}

/**
 * Fills a backlog with batch publishes (measured as publish-batch), then starts `consumers`
 * consumers on it and measures how fast they empty it.
 */
export async function measureBacklog(
  system: QueueSystem,
  queue: string,
  settings: PhaseSettings,
  consumers = 1,
): Promise<Measurement[]> {
  await system.prepare(queue);
  try {
    const publishStarted = now();
    const publishDeadline = publishStarted + settings.phaseTimeoutMs;
    let published = 0;
    for (let i = 0; published < settings.messages && now() < publishDeadline; i += 1) {
      const count = Math.min(settings.batchSize, settings.messages - published);
      await system.publishBatch(queue, makePayloads(published, count, settings.payloadBytes));
      published += count;
    }
    const batch = throughput(
      'publish-batch',
      published,
      settings.messages,
      (now() - publishStarted) / 1000,
    );

    // SMTP: accepted is not yet delivered; the backlog is what has arrived.
    const waiting = await waitForBacklog(system, queue, published, now() + settings.phaseTimeoutMs);
    const backlog = Math.min(waiting, published);

    const arrivals = new Arrivals();
    const started = now();
    const running = await startConsumers(
      system,
      queue,
      recorder(arrivals),
      consumers,
      settings.concurrency,
    );
    await arrivals.reached(backlog, started + settings.phaseTimeoutMs);
    const elapsed = ((arrivals.distinct >= backlog ? arrivals.lastAt : now()) - started) / 1000;
    await stopConsumers(system, running);
    const consume = throughput('consume', arrivals.distinct, backlog, elapsed, arrivals.duplicates);
    if (backlog < published) {
      consume.notes.push(`${published - backlog} published messages had not arrived in time`);
    }
    return [batch, consume];
  } finally {
    await removeQueue(system, queue);
  }
}

/** Producer and one consumer at once: from the first publish to the last message handled. */
export async function measureEndToEnd(
  system: QueueSystem,
  queue: string,
  settings: PhaseSettings,
): Promise<Measurement> {
  await system.prepare(queue);
  const arrivals = new Arrivals();
  const running = await startConsumers(system, queue, recorder(arrivals), 1, settings.concurrency);
  try {
    const started = now();
    // Two phases' time: the producer's, and the consumers' catching up.
    const deadline = started + END_TO_END_TIMEOUT_FACTOR * settings.phaseTimeoutMs;
    const published = await pipelined(settings.messages, settings.inflight, deadline, (i) =>
      system.publish(queue, makePayload(i, settings.payloadBytes)),
    );
    await arrivals.reached(published, deadline);
    const complete = arrivals.distinct >= published;
    const elapsed = ((complete ? arrivals.lastAt : now()) - started) / 1000;
    return throughput(
      'end-to-end',
      arrivals.distinct,
      settings.messages,
      elapsed,
      arrivals.duplicates,
    );
  } finally {
    await stopConsumers(system, running);
    await removeQueue(system, queue);
  }
}

/**
 * Latency from the publish call to the handler's start, for `samples` messages sent
 * `intervalMs` apart to a consumer that is idle. A message that has not arrived by the
 * deadline counts with the time waited so far, so the percentiles are then lower bounds.
 */
export async function measureLatency(
  system: QueueSystem,
  queue: string,
  settings: PhaseSettings,
  samples: number,
  intervalMs: number,
): Promise<Measurement[]> {
  await system.prepare(queue);
  const arrivals = new Arrivals();
  const running = await startConsumers(system, queue, recorder(arrivals), 1, settings.concurrency);
  try {
    await sleep(LATENCY_SETTLE_MS);
    const sentAt: number[] = [];
    const publishes: Promise<void>[] = [];
    const failures: string[] = [];
    const started = now();
    for (let i = 0; i < samples; i += 1) {
      const wait = started + i * intervalMs - now();
      if (wait > 0) {
        await sleep(wait);
      }
      sentAt.push(now());
      publishes.push(
        system.publish(queue, makePayload(i, settings.payloadBytes)).catch((err: unknown) => {
          failures.push(reason(err));
        }),
      );
    }
    const deadline = now() + settings.phaseTimeoutMs;
    await arrivals.reached(samples, deadline);
    await Promise.race([Promise.all(publishes), sleep(Math.max(0, deadline - now()))]);

    const end = now();
    const latencies = sentAt.map((sent, seq) => (arrivals.firstAt.get(seq) ?? end) - sent);
    const missing = samples - arrivals.distinct;
    return LATENCY_METRICS.map((metric) => {
      const p = Number(metric.slice('latency-p'.length));
      const measurement: Measurement = {
        metric,
        value: percentile(latencies, p),
        unit: 'ms',
        count: arrivals.distinct,
        target: samples,
        capped: missing > 0,
        duplicates: arrivals.duplicates,
        notes: [],
      };
      if (missing > 0) {
        measurement.notes.push(`${missing} of ${samples} had not arrived: a lower bound`);
      }
      if (failures.length > 0) {
        measurement.notes.push(`${failures.length} publishes failed: ${failures[0]}`);
      }
      return measurement;
    });
  } finally {
    await stopConsumers(system, running);
    await removeQueue(system, queue);
  }
}

/**
 * Publishes single messages (measured as publish), then consumes them as a backlog (measured
 * as consume): the scaling runs' way to see what a payload size costs on each side.
 */
export async function measurePublishThenConsume(
  system: QueueSystem,
  queue: string,
  settings: PhaseSettings,
): Promise<Measurement[]> {
  await system.prepare(queue);
  try {
    const publishStarted = now();
    const published = await pipelined(
      settings.messages,
      settings.inflight,
      publishStarted + settings.phaseTimeoutMs,
      (i) => system.publish(queue, makePayload(i, settings.payloadBytes)),
    );
    const publish = throughput(
      'publish',
      published,
      settings.messages,
      (now() - publishStarted) / 1000,
    );

    const waiting = await waitForBacklog(system, queue, published, now() + settings.phaseTimeoutMs);
    const backlog = Math.min(waiting, published);
    const arrivals = new Arrivals();
    const started = now();
    const running = await startConsumers(
      system,
      queue,
      recorder(arrivals),
      1,
      settings.concurrency,
    );
    await arrivals.reached(backlog, started + settings.phaseTimeoutMs);
    const elapsed = ((arrivals.distinct >= backlog ? arrivals.lastAt : now()) - started) / 1000;
    await stopConsumers(system, running);
    return [
      publish,
      throughput('consume', arrivals.distinct, backlog, elapsed, arrivals.duplicates),
    ];
  } finally {
    await removeQueue(system, queue);
  }
}

/** Fills a queue with `count` messages in large batches, unmeasured; returns how many. */
export async function fillQueue(
  system: QueueSystem,
  queue: string,
  count: number,
  payloadBytes: number,
  batchSize: number,
  deadline: number,
): Promise<number> {
  const fill = system.fillBacklog?.bind(system) ?? system.publishBatch.bind(system);
  let filled = 0;
  while (filled < count && now() < deadline) {
    const size = Math.min(batchSize, count - filled);
    await fill(queue, makePayloads(filled, size, payloadBytes));
    filled += size;
  }
  return filled;
}
