import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import type { Mailbus, Message } from '../../src/index.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const root = tempDir('worker');
let bus: Mailbus;

async function open(): Promise<Mailbus> {
  bus = await connect({ url: `maildir:${join(root, 'queue')}` });
  return bus;
}

afterEach(async () => {
  await bus?.close();
});

function statsOf(rows: Awaited<ReturnType<Mailbus['stats']>>, group = 'default') {
  const row = rows.find((r) => r.group === group);
  return (
    row && { waiting: row.waiting, inFlight: row.inFlight, handled: row.handled, dead: row.dead }
  );
}

describe('a worker on the Maildir store', () => {
  it('handles every message once with concurrent handlers, and acks them', async () => {
    await open();
    const topic = uniqueTopic('work');
    const payloads = Array.from({ length: 200 }, (_, n) => ({ payload: { n } }));
    const ids = await bus.publishBatch(topic, payloads);

    const seen: number[] = [];
    let running = 0;
    let mostAtOnce = 0;
    const worker = bus.consume(
      topic,
      async (message: Message) => {
        running += 1;
        mostAtOnce = Math.max(mostAtOnce, running);
        await new Promise((resolve) => setTimeout(resolve, 2));
        seen.push((message.payload as { n: number }).n);
        running -= 1;
      },
      { concurrency: 4, maxMessages: 200 },
    );
    const summary = await worker.done;

    expect(summary).toEqual({
      handled: 200,
      failed: 0,
      deadLettered: 0,
      recovered: 0,
      quarantined: 0,
      reason: 'max',
    });
    expect([...seen].sort((a, b) => a - b)).toEqual(payloads.map((p) => p.payload.n));
    expect(mostAtOnce).toBe(4);
    expect(ids).toHaveLength(200);
    expect(statsOf(await bus.stats(topic))).toEqual({
      waiting: 0,
      inFlight: 0,
      handled: 200,
      dead: 0,
    });
  });

  it('retries a failed message with its attempt number and last error', async () => {
    await open();
    const topic = uniqueTopic('retry');
    const id = await bus.publish(topic, { flaky: true });
    const attempts: Array<Pick<Message, 'id' | 'attempt' | 'lastError'>> = [];
    const worker = bus.consume(
      topic,
      (message) => {
        attempts.push({ id: message.id, attempt: message.attempt, lastError: message.lastError });
        if (message.attempt < 3) {
          throw new Error(`boom ${message.attempt}`);
        }
      },
      { maxMessages: 3, backoffMs: 10 },
    );
    const summary = await worker.done;

    expect(summary).toMatchObject({ handled: 1, failed: 2, deadLettered: 0 });
    expect(attempts).toEqual([
      { id, attempt: 1, lastError: undefined },
      { id, attempt: 2, lastError: 'boom 1' },
      { id, attempt: 3, lastError: 'boom 2' },
    ]);
    expect(statsOf(await bus.stats(topic))).toEqual({
      waiting: 0,
      inFlight: 0,
      handled: 1,
      dead: 0,
    });
  });

  it('dead-letters a message after its last attempt, keeping the original', async () => {
    await open();
    const topic = uniqueTopic('poison');
    const id = await bus.publish(topic, { poison: 'ünï' });
    const worker = bus.consume(
      topic,
      () => {
        throw new Error('cannot handle this');
      },
      { maxMessages: 3, maxAttempts: 3, backoffMs: 10 },
    );
    expect(await worker.done).toMatchObject({ handled: 0, failed: 2, deadLettered: 1 });
    expect(statsOf(await bus.stats(topic))).toEqual({
      waiting: 0,
      inFlight: 0,
      handled: 0,
      dead: 1,
    });

    const junk = join(root, 'queue', `.${topic}.default.Junk`, 'new');
    const [file] = readdirSync(junk);
    const text = readFileSync(join(junk, file as string), 'utf8');
    expect(text).toContain(`Message-ID: <${id}>`);
    expect(text).toContain('X-Mailbus-Attempts: 3');
    expect(text).toContain('X-Mailbus-Last-Error: cannot handle this');
    expect(text).toContain('"poison": "\\u00fcn\\u00ef"');
  });

  it('quarantines at once a message whose JSON body is broken, and carries on', async () => {
    await open();
    const topic = uniqueTopic('broken');
    await bus.subscribe(topic, 'default');
    const broken = 'Content-Type: application/json\r\nMessage-ID: <b1@test>\r\n\r\n{"a":\r\n';
    writeFileSync(join(root, 'queue', `.${topic}.default`, 'new', '1.broken.test'), broken);
    await bus.publish(topic, { fine: true });

    const handled: unknown[] = [];
    const worker = bus.consume(topic, (message) => void handled.push(message.payload), {
      maxMessages: 2,
    });
    expect(await worker.done).toMatchObject({ handled: 1, deadLettered: 0, quarantined: 1 });
    expect(handled).toEqual([{ fine: true }]);
    expect(statsOf(await bus.stats(topic))).toMatchObject({ dead: 0, handled: 1, waiting: 0 });
    const [kept] = await bus.quarantine(topic).list();
    expect(kept).toMatchObject({ id: 'b1@test', reason: 'malformed' });
    expect(kept?.detail).toMatch(/^body is declared application\/json but is not valid JSON/);
  });

  it('hands back claimed but unstarted messages when it closes', async () => {
    await open();
    const topic = uniqueTopic('close');
    await bus.publishBatch(
      topic,
      Array.from({ length: 20 }, (_, n) => ({ payload: n })),
    );
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started = 0;
    const worker = bus.consume(
      topic,
      async () => {
        started += 1;
        await gate;
      },
      { concurrency: 2, prefetch: 10 },
    );
    while (started < 2) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(statsOf(await bus.stats(topic))).toMatchObject({ inFlight: 12, waiting: 8 });

    const closing = worker.close();
    release();
    expect(await closing).toMatchObject({ handled: 2, reason: 'closed' });
    expect(statsOf(await bus.stats(topic))).toEqual({
      waiting: 18,
      inFlight: 0,
      handled: 2,
      dead: 0,
    });
    expect(readdirSync(join(root, 'queue')).filter((d) => d.includes('In-Progress'))).toEqual([]);
  });

  it('stops after --wait worth of silence', async () => {
    await open();
    const topic = uniqueTopic('idle');
    await bus.publish(topic, 1);
    const started = Date.now();
    const worker = bus.consume(topic, () => undefined, { idleTimeoutMs: 300 });
    expect(await worker.done).toMatchObject({ handled: 1, reason: 'idle' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
  });

  it('delivers a message published while the worker waits', async () => {
    await open();
    const topic = uniqueTopic('live');
    const received: unknown[] = [];
    const worker = bus.consume(topic, (message) => void received.push(message.payload), {
      maxMessages: 1,
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await bus.publish(topic, { live: 1 });
    expect(await worker.done).toMatchObject({ handled: 1, reason: 'max' });
    expect(received).toEqual([{ live: 1 }]);
  });
});
