// The demo pipeline: publishes a stream of e-commerce events to three topics while three
// consumer groups, each with several workers per topic, handle every one of them. It counts
// what each group handled, by message id, to show that nothing was lost or handled twice.

import type { Mailbus } from '../client.js';
import type { Worker } from '../consumer/worker.js';
import type { OutgoingMessage } from '../message/message.js';
import { DEMO_GROUPS, DEMO_TOPICS, demoEvent } from './events.js';

/** Events per publish call: one store round trip and one fsync per batch. */
const PUBLISH_BATCH = 50;

export interface DemoOptions {
  count: number;
  workersPerGroup: number;
  concurrency: number;
  /** Give up when the groups have not finished by then. */
  timeoutMs: number;
  /** Called about every 250 ms with the counts so far. */
  onProgress?: (progress: DemoProgress) => void;
}

export interface DemoProgress {
  published: number;
  handled: Record<string, number>;
  elapsedMs: number;
}

export interface GroupResult {
  handled: number;
  duplicates: number;
  lost: number;
}

export interface DemoResult {
  published: number;
  groups: Record<string, GroupResult>;
  seconds: number;
  /** Handled messages of all groups per second. */
  messagesPerSecond: number;
  complete: boolean;
}

const PROGRESS_INTERVAL_MS = 250;

/** The header that marks this run's events, so leftovers of an earlier run are not counted. */
const RUN_HEADER = 'X-Demo-Run';

export async function runDemo(bus: Mailbus, options: DemoOptions): Promise<DemoResult> {
  const run = `${Date.now().toString(36)}-${process.pid}`;

  // Every group on every topic before the first publish: a group gets what is published after
  // it subscribed.
  for (const topic of DEMO_TOPICS) {
    for (const group of DEMO_GROUPS) {
      await bus.subscribe(topic, group);
    }
  }

  const published = new Set<string>();
  const seen = new Map<string, Set<string>>(DEMO_GROUPS.map((group) => [group, new Set()]));
  const duplicates = new Map<string, number>(DEMO_GROUPS.map((group) => [group, 0]));
  const handledCount = (group: string): number => seen.get(group)?.size ?? 0;
  const started = Date.now();
  let allHandled: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => {
    allHandled = resolve;
  });
  let publishing = true;
  const checkDone = (): void => {
    if (!publishing && DEMO_GROUPS.every((group) => handledCount(group) >= published.size)) {
      allHandled();
    }
  };

  const workers: Worker[] = [];
  for (const group of DEMO_GROUPS) {
    for (const topic of DEMO_TOPICS) {
      for (let n = 0; n < options.workersPerGroup; n += 1) {
        const worker = bus.consume(
          topic,
          (message) => {
            if (message.headers[RUN_HEADER.toLowerCase()] !== run) {
              return; // an event of an earlier, interrupted run: handled, not counted
            }
            const ids = seen.get(group) as Set<string>;
            if (ids.has(message.id)) {
              duplicates.set(group, (duplicates.get(group) ?? 0) + 1);
            }
            ids.add(message.id);
            checkDone();
          },
          { group, concurrency: options.concurrency, prefetch: options.concurrency * 4 },
        );
        workers.push(worker);
      }
    }
  }

  const progress = setInterval(() => {
    options.onProgress?.({
      published: published.size,
      handled: Object.fromEntries(DEMO_GROUPS.map((group) => [group, handledCount(group)])),
      elapsedMs: Date.now() - started,
    });
  }, PROGRESS_INTERVAL_MS);

  // The time limit covers the whole run, publishing included.
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => {
      timedOut = true;
      resolve('timeout');
    }, options.timeoutMs);
  });
  try {
    for (let first = 0; first < options.count && !timedOut; first += PUBLISH_BATCH) {
      const batchSize = Math.min(PUBLISH_BATCH, options.count - first);
      const byTopic = new Map<string, OutgoingMessage[]>();
      for (let n = first; n < first + batchSize; n += 1) {
        const { topic, key, subject, payload } = demoEvent(n);
        const message = { key, subject, payload, headers: { [RUN_HEADER]: run } };
        byTopic.set(topic, [...(byTopic.get(topic) ?? []), message]);
      }
      for (const [topic, events] of byTopic) {
        const ids = await bus.publishBatch(topic, events);
        ids.forEach((id) => published.add(id));
      }
    }
    publishing = false;
    checkDone();
    await Promise.race([finished, timeout]);
  } finally {
    clearTimeout(timer);
    clearInterval(progress);
    await Promise.all(workers.map((worker) => worker.close()));
  }

  const seconds = (Date.now() - started) / 1000;
  const groups: Record<string, GroupResult> = {};
  let totalHandled = 0;
  for (const group of DEMO_GROUPS) {
    const ids = seen.get(group) as Set<string>;
    const lost = [...published].filter((id) => !ids.has(id)).length;
    groups[group] = { handled: ids.size, duplicates: duplicates.get(group) ?? 0, lost };
    totalHandled += ids.size;
  }
  return {
    published: published.size,
    groups,
    seconds,
    messagesPerSecond: totalHandled / seconds,
    complete: Object.values(groups).every((group) => group.lost === 0),
  };
}
