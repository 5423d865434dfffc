// Ordering keys: within a group, the messages of one key are handled one at a time in publish
// order, across competing consumers, while messages of different keys run in parallel. A
// failing message holds the later messages of its key until it is acked or dead-lettered.

import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { DeadLetterError, connect } from '../../src/index.js';
import type { ConnectOptions, Mailbus, Message, Worker } from '../../src/index.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

interface Run {
  key: string | undefined;
  seq: number;
  attempt: number;
  startMs: number;
  endMs: number;
  failed: boolean;
}

const KEYS = ['alpha', 'bravo', 'charlie', 'delta', 'echo'];
const PER_KEY = 12;
const UNKEYED = 20;

function orderingSuite(name: string, options: () => ConnectOptions): void {
  describe(`ordering keys on ${name}`, () => {
    const buses: Mailbus[] = [];
    const workers: Worker[] = [];

    afterEach(async () => {
      await Promise.all(workers.splice(0).map((worker) => worker.close()));
      await Promise.all(buses.splice(0).map((bus) => bus.close()));
    });

    async function open(): Promise<Mailbus> {
      const bus = await connect(options());
      buses.push(bus);
      return bus;
    }

    /** Starts `count` competing consumers, each on its own connection, recording every run. */
    async function competing(
      topic: string,
      count: number,
      handle: (message: Message, seq: number) => Promise<void>,
    ): Promise<Run[]> {
      const runs: Run[] = [];
      for (let i = 0; i < count; i += 1) {
        const bus = await open();
        const worker = bus.consume(
          topic,
          async (message) => {
            const payload = message.payload as { seq: number };
            const run: Run = {
              key: message.key,
              seq: payload.seq,
              attempt: message.attempt,
              startMs: performance.now(),
              endMs: Number.POSITIVE_INFINITY,
              failed: false,
            };
            runs.push(run);
            try {
              await handle(message, payload.seq);
            } catch (err) {
              run.failed = true;
              throw err;
            } finally {
              run.endMs = performance.now();
            }
          },
          { concurrency: 4, backoffMs: 50, maxBackoffMs: 100, leaseMs: 10_000 },
        );
        workers.push(worker);
      }
      return runs;
    }

    async function until(done: () => boolean, timeoutMs = 60_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!done()) {
        if (Date.now() > deadline) {
          throw new Error('timed out waiting for the workers');
        }
        await sleep(20);
      }
    }

    it('hands out each key one at a time in publish order, keys in parallel', async () => {
      const bus = await open();
      const topic = uniqueTopic('order');
      await bus.subscribe(topic, 'default');

      // Interleaved, as a busy producer would publish them; unkeyed messages in between.
      const batch = [];
      for (let seq = 0; seq < PER_KEY; seq += 1) {
        for (const key of KEYS) {
          batch.push({ payload: { seq }, key });
        }
        if (seq < UNKEYED) {
          batch.push({ payload: { seq: -1 } });
        }
      }
      await bus.publishBatch(topic, batch);

      const runs = await competing(topic, 3, () => sleep(Math.random() * 8));
      const total = KEYS.length * PER_KEY + Math.min(UNKEYED, PER_KEY);
      await until(() => runs.filter((run) => run.endMs < Infinity).length >= total);

      for (const key of KEYS) {
        const ofKey = runs.filter((run) => run.key === key).sort((a, b) => a.startMs - b.startMs);
        expect(ofKey.map((run) => run.seq)).toEqual([...Array(PER_KEY).keys()]);
        for (let i = 1; i < ofKey.length; i += 1) {
          // The next message of a key starts only after the one before it finished.
          expect(ofKey[i]!.startMs).toBeGreaterThanOrEqual(ofKey[i - 1]!.endMs);
        }
      }

      // Different keys did run at the same time.
      const overlaps = runs.filter((a) =>
        runs.some((b) => a !== b && a.key !== b.key && b.startMs < a.endMs && a.startMs < b.endMs),
      );
      expect(overlaps.length).toBeGreaterThan(0);
      const stats = (await bus.stats(topic)).find((row) => row.group === 'default');
      expect(stats).toMatchObject({ waiting: 0, scheduled: 0, inFlight: 0 });
    });

    it('holds a key behind a failing message until it is handled or dead-lettered', async () => {
      const bus = await open();
      const topic = uniqueTopic('orderfail');
      await bus.subscribe(topic, 'default');
      const batch = [];
      for (let seq = 0; seq < 4; seq += 1) {
        batch.push({ payload: { seq }, key: 'retried' });
        batch.push({ payload: { seq }, key: 'dead' });
        batch.push({ payload: { seq }, key: 'free' });
      }
      await bus.publishBatch(topic, batch);

      // "retried" fails twice at seq 1; "dead" gives up on seq 1 at once.
      const runs = await competing(topic, 2, async (message, seq) => {
        await sleep(5);
        if (message.key === 'retried' && seq === 1 && message.attempt < 3) {
          throw new Error(`failing attempt ${message.attempt}`);
        }
        if (message.key === 'dead' && seq === 1) {
          throw new DeadLetterError('cannot be handled');
        }
      });
      await until(() => runs.filter((run) => run.endMs < Infinity).length >= 4 + 2 + 4 + 4);

      const ofKey = (key: string) =>
        runs.filter((run) => run.key === key).sort((a, b) => a.startMs - b.startMs);
      const retried = ofKey('retried');
      expect(retried.map((run) => [run.seq, run.attempt, run.failed])).toEqual([
        [0, 1, false],
        [1, 1, true],
        [1, 2, true],
        [1, 3, false],
        [2, 1, false],
        [3, 1, false],
      ]);
      expect(ofKey('dead').map((run) => [run.seq, run.failed])).toEqual([
        [0, false],
        [1, true],
        [2, false],
        [3, false],
      ]);

      // While "retried" waited out its backoff, the other keys went on.
      const firstFailure = retried[1]!.endMs;
      const success = retried[3]!.startMs;
      const others = runs.filter((run) => run.key === 'free' && run.startMs > firstFailure);
      expect(others.some((run) => run.startMs < success)).toBe(true);
      const stats = (await bus.stats(topic)).find((row) => row.group === 'default');
      expect(stats).toMatchObject({ waiting: 0, scheduled: 0, inFlight: 0, dead: 1 });
    });
  });
}

const maildir = `maildir:${join(tempDir('ordering'), 'queue')}`;
orderingSuite('a Maildir', () => ({ url: maildir }));
