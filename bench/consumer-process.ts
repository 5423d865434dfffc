// A consumer process of the scaling runs. The runner forks it, tells it which system and queue
// to consume and with how many consumers, and then: ready -> start -> progress... -> stop ->
// done (with what it handled, when it last handled something, and its peak RSS). It exits by
// itself when the runner goes away or when its own time limit passes.

import { performance } from 'node:perf_hooks';
import type { SystemId } from './options.js';
import { seqOf } from './payload.js';
import type { Endpoints, QueueSystem, RunningConsumer } from './systems/system.js';
import { openSystem, reason } from './systems/system.js';

/** A consumer process never outlives this, whatever the runner does. */
const PROCESS_LIMIT_MS = 15 * 60_000;

/** How often the process tells the runner how many it handled. */
const PROGRESS_INTERVAL_MS = 50;

export interface InitMessage {
  type: 'init';
  id: SystemId;
  endpoints: Endpoints;
  queue: string;
  consumers: number;
  concurrency: number;
}

export type ParentMessage = InitMessage | { type: 'start' } | { type: 'stop' };

export type ChildMessage =
  | { type: 'ready'; rssBytes: number }
  | { type: 'progress'; handled: number }
  | {
      type: 'done';
      handled: number;
      /** Epoch milliseconds of the last message handled (0 when none). */
      lastAtEpochMs: number;
      seqs: number[];
      maxRssBytes: number;
      warnings: string[];
    }
  | { type: 'failed'; error: string };

function send(message: ChildMessage): void {
  process.send?.(message);
}

/** Sends a last message and exits once it is on its way. */
function sendAndExit(message: ChildMessage, code: number): void {
  if (!process.send) {
    process.exit(code);
  }
  process.send(message, undefined, {}, () => process.exit(code));
}

function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

async function main(): Promise<void> {
  const limit = setTimeout(() => process.exit(3), PROCESS_LIMIT_MS);
  limit.unref();
  process.on('disconnect', () => process.exit(2));

  let system: QueueSystem | undefined;
  let init: InitMessage | undefined;
  const running: RunningConsumer[] = [];
  const seqs: number[] = [];
  let lastAt = 0;
  let progress: NodeJS.Timeout | undefined;

  const handler = (payload: unknown): void => {
    seqs.push(seqOf(payload));
    lastAt = epochNow();
  };

  process.on('message', (message: ParentMessage) => {
    void (async () => {
      try {
        if (message.type === 'init') {
          init = message;
          system = await openSystem(message.id, message.endpoints, { owner: false });
          send({ type: 'ready', rssBytes: process.memoryUsage().rss });
        } else if (message.type === 'start' && system && init) {
          for (let i = 0; i < init.consumers; i += 1) {
            running.push(
              await system.consume(init.queue, handler, { concurrency: init.concurrency }),
            );
          }
          progress = setInterval(
            () => send({ type: 'progress', handled: seqs.length }),
            PROGRESS_INTERVAL_MS,
          );
        } else if (message.type === 'stop') {
          clearInterval(progress);
          await Promise.allSettled(running.map((consumer) => consumer.stop()));
          await system?.close();
          sendAndExit(
            {
              type: 'done',
              handled: seqs.length,
              lastAtEpochMs: lastAt,
              seqs,
              maxRssBytes: process.resourceUsage().maxRSS * 1024,
              warnings: system?.warnings ?? [],
            },
            0,
          );
        }
      } catch (err) {
        sendAndExit({ type: 'failed', error: reason(err) }, 1);
      }
    })();
  });
}

void main();
