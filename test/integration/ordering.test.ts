// Ordering keys: within a group, the messages of one key are handled one at a time in publish
// order, across competing consumers, while messages of different keys run in parallel. A
// failing message holds the later messages of its key until it is acked or dead-lettered.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { DeadLetterError, connect } from '../../src/index.js';
import type { ConnectOptions, Mailbus, Message, Worker } from '../../src/index.js';
import { keyDigest } from '../../src/message/ordering.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { CLI } from '../support/cli.js';
import { imapEnv, imapOptions, imapSession } from '../support/imap.js';
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

/** The default group's counts; acks are batched, so the caller waits for inFlight to reach 0. */
async function settledStats(bus: Mailbus, topic: string) {
  const row = (await bus.stats(topic)).find((stats) => stats.group === 'default');
  if (row === undefined) {
    throw new Error(`no stats for ${topic}`);
  }
  return row;
}

/** Leaves a turn record naming a message that is gone, as a consumer dying at ack would. */
type PlantStaleTurn = (topic: string, key: string) => Promise<void>;

function orderingSuite(
  name: string,
  options: () => ConnectOptions,
  env: () => NodeJS.ProcessEnv,
  plantStaleTurn: PlantStaleTurn,
): void {
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
      leaseMs = 10_000,
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
          { concurrency: 4, backoffMs: 50, maxBackoffMs: 100, leaseMs },
        );
        workers.push(worker);
      }
      return runs;
    }

    async function until(
      done: () => boolean | Promise<boolean>,
      timeoutMs = 60_000,
    ): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!(await done())) {
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
      await until(async () => (await settledStats(bus, topic)).inFlight === 0);
      expect(await settledStats(bus, topic)).toMatchObject({ waiting: 0, scheduled: 0 });
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
      await until(async () => (await settledStats(bus, topic)).inFlight === 0);
      expect(await settledStats(bus, topic)).toMatchObject({ waiting: 0, scheduled: 0, dead: 1 });
    });

    it('keeps the turn of a message whose consumer was killed: it goes first again', async () => {
      const bus = await open();
      const topic = uniqueTopic('orderkill');
      await bus.subscribe(topic, 'default');
      await bus.publishBatch(
        topic,
        [0, 1, 2, 3].map((seq) => ({ payload: { seq }, key: 'account-7' })),
      );

      // A consumer takes the first message and dies with it in flight.
      const marker = join(tempDir('orderkill'), 'started');
      const victim = spawn(
        process.execPath,
        [CLI, 'consume', topic, '--lease', '1s', '--exec', `touch '${marker}'; sleep 60`],
        { env: { ...process.env, ...env() }, stdio: 'ignore' },
      );
      await until(() => existsSync(marker));
      victim.kill('SIGKILL');

      // The rest of the group must not run the later messages first.
      const runs = await competing(topic, 2, () => sleep(2), 1000);
      await until(() => runs.filter((run) => run.endMs < Infinity).length >= 4);
      const order = runs.sort((a, b) => a.startMs - b.startMs);
      expect(order.map((run) => [run.seq, run.attempt])).toEqual([
        [0, 2],
        [1, 1],
        [2, 1],
        [3, 1],
      ]);
    });

    it('sweeps away a turn left by a consumer that died at ack', async () => {
      const bus = await open();
      const topic = uniqueTopic('orderstale');
      await bus.subscribe(topic, 'default');
      await plantStaleTurn(topic, 'customer-9');
      await bus.publishBatch(
        topic,
        [0, 1].map((seq) => ({ payload: { seq }, key: 'customer-9' })),
      );

      // Blocked by the stale turn until a recovery pass sweeps it: at the worker's start, and
      // every half lease. Without the sweep, the key would wait forever.
      const runs = await competing(topic, 1, () => Promise.resolve(), 1000);
      await until(() => runs.filter((run) => run.endMs < Infinity).length >= 2, 20_000);
      expect(runs.map((run) => run.seq)).toEqual([0, 1]);
    });
  });
}

const maildirRoot = join(tempDir('ordering'), 'queue');
const maildir = `maildir:${maildirRoot}`;

orderingSuite(
  'a Maildir',
  () => ({ url: maildir }),
  () => ({ MAILBUS_URL: maildir }),
  async (topic, key) => {
    const dir = join(maildirRoot, 'mailbus-turns', `${topic}.default`);
    mkdirSync(dir, { recursive: true });
    const record = join(dir, `${keyDigest(key)}~1.M1P1Q1Rgone.host,S=1~dead~0`);
    writeFileSync(record, '');
    const old = new Date(Date.now() - 60_000);
    utimesSync(record, old, old);
  },
);

orderingSuite(
  'Dovecot over IMAP',
  () => imapOptions(),
  () => imapEnv(),
  async (topic, key) => {
    const client = await imapSession();
    const mailbox = `${topic}.default.Turns`;
    await client.mailboxCreate(mailbox);
    const record = [
      'Subject: a turn its consumer never ended',
      `X-Mailbus-Turn-Key: ${keyDigest(key)}`,
      'X-Mailbus-Turn-Holder: gone@mailbus',
      '',
      '',
    ].join('\r\n');
    await client.append(mailbox, record, ['\\Seen'], new Date(Date.now() - 60_000));
    await client.logout();
  },
);
