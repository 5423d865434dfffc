// The delivery guarantees on the Maildir store: leases and crash recovery, time limits, retries
// steered by the handler, delays, dead letters and their replay, retention, graceful stop.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DeadLetterError, RetryError, connect } from '../../src/index.js';
import type { Mailbus, Message } from '../../src/index.js';
import { CLI, runCli } from '../support/cli.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const root = tempDir('guarantees');
const url = `maildir:${join(root, 'queue')}`;
let bus: Mailbus;

afterEach(async () => {
  await bus?.close();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function groupStats(topic: string, group = 'default') {
  return (await bus.stats(topic)).find((row) => row.group === group);
}

describe('guarantees on a Maildir', () => {
  it('recovers the messages of a worker killed with SIGKILL, counting the attempt', async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('crash');
    const id = await bus.publish(topic, { order: 1 });

    // A worker that claims the message and hangs in its handler, then is killed.
    const marker = join(root, `${topic}.started`);
    const victim = spawn(
      process.execPath,
      [CLI, 'consume', topic, '--lease', '1s', '--exec', `touch '${marker}'; sleep 60`],
      { env: { ...process.env, MAILBUS_URL: url }, stdio: 'ignore' },
    );
    while (!existsSync(marker)) {
      await sleep(20);
    }
    expect(await groupStats(topic)).toMatchObject({ waiting: 0, inFlight: 1 });
    victim.kill('SIGKILL');
    const killedAt = Date.now();

    const seen: Message[] = [];
    const worker = bus.consume(topic, (message) => void seen.push(message), {
      leaseMs: 1000,
      backoffMs: 0,
      maxMessages: 1,
    });
    const summary = await worker.done;
    expect(summary).toMatchObject({ handled: 1, recovered: 1 });
    expect(seen.map((m) => [m.id, m.attempt])).toEqual([[id, 2]]);
    expect(seen[0]?.lastError).toMatch(/lease expired/);
    expect(Date.now() - killedAt).toBeLessThan(5000);
    expect(await groupStats(topic)).toMatchObject({ waiting: 0, inFlight: 0, handled: 1 });
  });

  it("rescues a dead worker's message before stopping for --wait, shorter than half a lease", async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('drain');
    const id = await bus.publish(topic, { order: 1 });
    const marker = join(root, `${topic}.started`);
    const victim = spawn(
      process.execPath,
      [CLI, 'consume', topic, '--lease', '2s', '--exec', `touch '${marker}'; sleep 60`],
      { env: { ...process.env, MAILBUS_URL: url }, stdio: 'ignore' },
    );
    while (!existsSync(marker)) {
      await sleep(20);
    }
    victim.kill('SIGKILL');
    await sleep(2_500); // its heartbeat is now older than its lease

    // Recovery every half lease (1.5 s) would come after the 1 s of --wait.
    const drain = await runCli(
      ['consume', topic, '--lease', '3s', '--backoff', '100ms', '--wait', '1s'],
      { env: { MAILBUS_URL: url } },
    );
    expect(drain.code).toBe(0);
    const handled = drain.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line));
    expect(handled.map((message) => [message.id, message.attempt])).toEqual([[id, 2]]);
    expect(await groupStats(topic)).toMatchObject({ waiting: 0, inFlight: 0, handled: 1 });
  });

  it('keeps a long handler its lease: no second worker starts it', async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('long');
    await bus.publish(topic, 'slow');
    const starts: string[] = [];
    const slow = bus.consume(
      topic,
      async () => {
        starts.push('slow');
        await sleep(2500);
      },
      { leaseMs: 600, maxMessages: 1 },
    );
    await sleep(200);
    const other = bus.consume(topic, () => void starts.push('other'), { leaseMs: 600 });
    expect(await slow.done).toMatchObject({ handled: 1 });
    await other.close();
    expect(starts).toEqual(['slow']);
  });

  it('fails an attempt that runs past its time limit and retries it', async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('timeout');
    await bus.publish(topic, 'hang');
    const attempts: Array<[number, string | undefined]> = [];
    const worker = bus.consume(
      topic,
      async (message, { signal }) => {
        attempts.push([message.attempt, message.lastError]);
        if (message.attempt === 1) {
          await new Promise((resolve) => signal.addEventListener('abort', resolve));
        }
      },
      { handlerTimeoutMs: 200, backoffMs: 0, maxMessages: 2 },
    );
    expect(await worker.done).toMatchObject({ handled: 1, failed: 1 });
    expect(attempts).toEqual([
      [1, undefined],
      [2, 'handler timed out after 200 ms'],
    ]);
  });

  it('kills an --exec command that runs past --timeout', async () => {
    const topic = uniqueTopic('exec-timeout');
    await runCli(['publish', topic, '{}'], { env: { MAILBUS_URL: url } });
    const started = Date.now();
    const result = await runCli(
      [
        'consume',
        topic,
        '--timeout',
        '300ms',
        '--backoff',
        '0',
        '--max-attempts',
        '2',
        '--max',
        '2',
        '--exec',
        'sleep 30',
      ],
      { env: { MAILBUS_URL: url } },
    );
    expect(result.code).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    bus = await connect({ url });
    expect(await groupStats(topic)).toMatchObject({ dead: 1, inFlight: 0, waiting: 0 });
    const [letter] = await bus.deadLetters(topic).list();
    expect(letter).toMatchObject({ attempts: 2, lastError: 'handler timed out after 300 ms' });
  });

  it('lets a handler give up at once, or ask for a retry after a delay', async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('steer');
    const giveUp = await bus.publish(topic, 'give up');
    const later = await bus.publish(topic, 'later');
    const times: Record<string, number[]> = { [giveUp]: [], [later]: [] };
    const worker = bus.consume(
      topic,
      (message) => {
        times[message.id]?.push(Date.now());
        if (message.payload === 'give up') {
          throw new DeadLetterError('this order was cancelled');
        }
        if (message.attempt === 1) {
          throw new RetryError('not yet', 700);
        }
      },
      { maxMessages: 3, backoffMs: 0 },
    );
    expect(await worker.done).toMatchObject({ handled: 1, failed: 1, deadLettered: 1 });
    expect(times[giveUp]).toHaveLength(1);
    const [first, second] = times[later] as number[];
    expect((second as number) - (first as number)).toBeGreaterThanOrEqual(650);
    const [letter] = await bus.deadLetters(topic).list();
    expect(letter).toMatchObject({
      id: giveUp,
      attempts: 1,
      lastError: 'this order was cancelled',
    });
  });

  it('holds a delayed publish until its time and hands it out within a second after', async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('delayed');
    const publishedAt = Date.now();
    await bus.publish(topic, 'soon', { delayMs: 1200 });
    await bus.publish(topic, 'now');
    const handled: Array<[unknown, number]> = [];
    const worker = bus.consume(topic, (m) => void handled.push([m.payload, Date.now()]), {
      maxMessages: 2,
    });
    await worker.done;
    expect(handled.map(([payload]) => payload)).toEqual(['now', 'soon']);
    const delayed = (handled[1]?.[1] as number) - publishedAt;
    expect(delayed).toBeGreaterThanOrEqual(1200);
    expect(delayed).toBeLessThan(2200);
  });

  it('writes a readable failure report with the original attached, and replays it', async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('report');
    const id = await bus.publish(topic, { order: 'ünï' }, { key: 'k1' });
    const failing = bus.consume(
      topic,
      () => {
        throw new Error('payment service down');
      },
      { maxAttempts: 2, backoffMs: 0, maxMessages: 2 },
    );
    expect(await failing.done).toMatchObject({ deadLettered: 1 });

    const detail = await bus.deadLetters(topic).show(id);
    const report = detail.report.toString('utf8');
    expect(report).toMatch(/Content-Type: multipart\/report; report-type=delivery-status/);
    expect(report).toContain('Status: 5.0.0');
    expect(report).toContain('Diagnostic-Code: x-mailbus; payment service down');
    expect(report).toContain('Content-Type: message/rfc822');
    expect(report).toMatch(/^Subject: =\?UTF-8\?Q\?Undeliverable/m);
    expect(detail.subject).toBe(`[${topic}] {"order":"ünï"}`);
    expect(detail.original.toString()).toContain(`Message-ID: <${id}>`);
    expect(detail).toMatchObject({ id, attempts: 2, lastError: 'payment service down' });

    expect(await bus.deadLetters(topic).replay([id])).toBe(1);
    const replayed: Message[] = [];
    const worker = bus.consume(topic, (m) => void replayed.push(m), { maxMessages: 1 });
    await worker.done;
    expect(replayed[0]).toMatchObject({ id, attempt: 1, key: 'k1', payload: { order: 'ünï' } });
    expect(await groupStats(topic)).toMatchObject({ dead: 0, handled: 1, waiting: 0 });
  });

  it('manages dead letters from the command line, asking before a purge', async () => {
    const env = { MAILBUS_URL: url };
    const topic = uniqueTopic('dlq-cli');
    for (const n of [1, 2, 3]) {
      await runCli(['publish', topic, `{"n":${n}}`], { env });
    }
    await runCli(['consume', topic, '--exec', 'exit 3', '--max-attempts', '1', '--max', '3'], {
      env,
    });
    const list = await runCli(['dlq', topic, 'list', '--json'], { env });
    const letters = list.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(letters).toHaveLength(3);
    expect(letters[0]).toMatchObject({ attempts: 1, lastError: 'command exited with code 3' });

    const show = await runCli(['dlq', topic, 'show', letters[0].id], { env });
    expect(show.stdout).toContain('message/delivery-status');
    const replay = await runCli(['dlq', topic, 'replay', letters[0].id], { env });
    expect(replay.stdout).toBe(`replayed 1 dead letter into ${topic}/default\n`);

    const refused = await runCli(['dlq', topic, 'purge'], { env });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/add --yes/);
    const purged = await runCli(['dlq', topic, 'purge', '--yes'], { env });
    expect(purged.stdout).toBe('deleted 2 dead letters\n');
    const stats = JSON.parse((await runCli(['stats', topic, '--json'], { env })).stdout);
    expect(stats.groups[0]).toMatchObject({ waiting: 1, dead: 0 });
  });

  it('deletes handled messages at ack with archive retention 0', async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('retention');
    await bus.publishBatch(topic, [{ payload: 1 }, { payload: 2 }]);
    const worker = bus.consume(topic, () => undefined, {
      archiveRetentionMs: 0,
      topicRetentionMs: 0,
    });
    let stats = await groupStats(topic);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (stats?.handled !== 0 || stats.waiting !== 0)) {
      await sleep(100);
      stats = await groupStats(topic);
    }
    await worker.close();
    expect(stats).toMatchObject({ waiting: 0, inFlight: 0, handled: 0 });
    const topicInbox = await bus.store.list({ topic, group: 'default', folder: 'topic' });
    expect(topicInbox).toHaveLength(0);
  });

  it('stops on SIGTERM, lets the running handler finish and hands back the rest', async () => {
    const topic = uniqueTopic('sigterm');
    bus = await connect({ url });
    await bus.publishBatch(
      topic,
      Array.from({ length: 5 }, (_, n) => ({ payload: n })),
    );
    const marker = join(root, `${topic}.started`);
    const done = join(root, `${topic}.done`);
    const child = spawn(
      process.execPath,
      [
        CLI,
        'consume',
        topic,
        '--prefetch',
        '4',
        '--exec',
        `touch '${marker}'; sleep 1; echo ok >> '${done}'`,
      ],
      { env: { ...process.env, MAILBUS_URL: url }, stdio: 'ignore' },
    );
    while (!existsSync(marker)) {
      await sleep(20);
    }
    child.kill('SIGTERM');
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expect(readFileSync(done, 'utf8')).toBe('ok\n');
    expect(await groupStats(topic)).toMatchObject({ waiting: 4, inFlight: 0, handled: 1 });
  });
});

/** Whether a process exists (signal 0 asks without sending anything). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('stopping at once', () => {
  it('ends on a second SIGINT, killing the running --exec command, and the message is kept', async () => {
    const topic = uniqueTopic('second-sigint');
    bus = await connect({ url });
    await bus.publish(topic, { n: 1 });
    const pidFile = join(root, `${topic}.pid`);
    const child = spawn(
      process.execPath,
      [CLI, 'consume', topic, '--exec', `echo $$ > '${pidFile}'; exec sleep 60`],
      { env: { ...process.env, MAILBUS_URL: url }, stdio: 'ignore' },
    );
    while (!existsSync(pidFile) || readFileSync(pidFile, 'utf8').trim() === '') {
      await sleep(20);
    }
    const command = Number(readFileSync(pidFile, 'utf8').trim());

    child.kill('SIGINT');
    await sleep(300);
    expect(child.exitCode).toBeNull(); // the first one waits for the handler, up to the grace
    const stoppedAt = Date.now();
    child.kill('SIGINT');
    const code = await new Promise((resolve) => child.on('close', resolve));

    expect(code).toBe(130);
    expect(Date.now() - stoppedAt).toBeLessThan(5_000);
    // Killed at once; a zombie may still answer signal 0 until it is reaped.
    for (let waited = 0; waited < 2_000 && isRunning(command); waited += 50) {
      await sleep(50);
    }
    expect(isRunning(command)).toBe(false);
    // Still claimed: another worker takes it over once the lease has run out.
    expect(await groupStats(topic)).toMatchObject({ waiting: 0, inFlight: 1, handled: 0 });
  });
});

describe('idempotent publishing', () => {
  it('stores a caller-chosen id once within the window and reports the same id', async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('idempotent');
    const first = await bus.publish(topic, { n: 1 }, { id: 'order-77' });
    const again = await bus.publish(topic, { n: 2 }, { id: 'order-77' });
    const batch = await bus.publishBatch(topic, [
      { payload: 3, id: 'order-78' },
      { payload: 4, id: 'order-78' },
      { payload: 5 },
    ]);
    expect([first, again]).toEqual(['order-77@mailbus', 'order-77@mailbus']);
    expect(batch[0]).toBe('order-78@mailbus');
    expect(batch[1]).toBe('order-78@mailbus');
    expect((await groupStats(topic))?.waiting).toBe(3);

    const seen: unknown[] = [];
    const worker = bus.consume(topic, (m) => void seen.push(m.payload), { maxMessages: 3 });
    await worker.done;
    expect(seen.sort()).toEqual([{ n: 1 }, 3, 5].sort());

    const noWindow = await connect({ url, dedupWindowMs: 0 });
    await noWindow.publish(topic, { n: 6 }, { id: 'order-77' });
    await noWindow.close();
    expect((await groupStats(topic))?.waiting).toBe(1);
  });
});

describe('dead letters keep the original exactly', () => {
  it('replays the original byte for byte, with its priority', async () => {
    bus = await connect({ url });
    const topic = uniqueTopic('exact');
    const id = await bus.publish(topic, { a: 'ünï' }, { priority: 'high' });
    const [published] = await bus.store.list({ topic, group: 'default', folder: 'waiting' });
    const worker = bus.consume(
      topic,
      () => {
        throw new Error('fails "once" ünï\nwith two lines');
      },
      { maxAttempts: 1, maxMessages: 1 },
    );
    await worker.done;

    const [letter] = await bus.deadLetters(topic).list();
    expect(letter?.lastError).toBe('fails "once" ünï with two lines');
    const detail = await bus.deadLetters(topic).show(id);
    expect(detail.original.equals(published?.raw as Buffer)).toBe(true);

    await bus.deadLetters(topic).replay('all');
    const [restored] = await bus.store.list({ topic, group: 'default', folder: 'waiting' });
    expect(restored?.raw.equals(published?.raw as Buffer)).toBe(true);
    expect(restored?.ref).toMatch(/^cur\/.*:2,F$/);
  });
});
