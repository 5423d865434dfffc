// The operator's commands on a Maildir: peek and tail look without claiming, stats --watch
// draws again and again, and long replays, purges and backfills tell their progress.

import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { Mailbus } from '../../src/client.js';
import { DeadLetterError } from '../../src/consumer/errors.js';
import { CLI, runCli } from '../support/cli.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const url = `maildir:${join(tempDir('cli-ops'), 'queue')}`;
const env = { MAILBUS_URL: url };
let bus: Mailbus | undefined;
const children: ChildProcessWithoutNullStreams[] = [];
afterAll(async () => {
  for (const child of children) {
    child.kill('SIGKILL');
  }
  await bus?.close();
});

async function library(): Promise<Mailbus> {
  bus ??= await connect({ url });
  return bus;
}

/** Starts `mailbus ARGS` and collects its output until stopped. */
function start(args: string[]) {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
  children.push(child);
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (chunk: Buffer) => (output.stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (output.stderr += chunk.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return { child, output, exited };
}

async function until(check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) {
      throw new Error('timed out waiting');
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Dead-letters every waiting message of the topic's default group. */
async function killAll(topic: string, count: number): Promise<void> {
  const worker = (await library()).consume(
    topic,
    () => {
      throw new DeadLetterError('refused by the test');
    },
    { concurrency: 8, maxMessages: count },
  );
  expect((await worker.done).deadLettered).toBe(count);
}

describe('operator commands', () => {
  it('peek prints messages of each state, oldest first, without claiming them', async () => {
    const topic = uniqueTopic('peek');
    for (const n of [1, 2, 3]) {
      await runCli(['publish', topic, JSON.stringify({ n }), '--key', `k${n}`], { env });
    }

    const peeked = await runCli(['peek', topic, '-n', '2', '--json'], { env });
    expect(peeked.stderr).toBe('');
    const lines = peeked.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(lines.map((line) => [line.payload, line.key, line.state, line.attempts])).toEqual([
      [{ n: 1 }, 'k1', 'waiting', 0],
      [{ n: 2 }, 'k2', 'waiting', 0],
    ]);
    expect((await (await library()).stats(topic))[0]).toMatchObject({ waiting: 3, inFlight: 0 });

    const table = await runCli(['peek', topic], { env });
    expect(table.stdout).toMatch(/^ID +STORED +ATTEMPTS +KEY +PAYLOAD\n/);
    expect(table.stdout.trim().split('\n')).toHaveLength(4);

    await killAll(topic, 3);
    const dead = await runCli(['peek', topic, '--state', 'dead', '-n', '1', '--json'], { env });
    expect(JSON.parse(dead.stdout)).toMatchObject({
      state: 'dead',
      attempts: 1,
      lastError: expect.stringContaining('refused by the test'),
    });
    const empty = await runCli(['peek', topic, '--state', 'in-flight'], { env });
    expect(empty.stdout).toBe(`no in-flight messages in ${topic}/default\n`);
    const bad = await runCli(['peek', topic, '--state', 'lost'], { env });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^mailbus: --state must be one of waiting, .*not "lost"\n$/);
  });

  it('tail prints what arrives after it started, once each, and claims nothing', async () => {
    const topic = uniqueTopic('tail');
    await runCli(['publish', topic, '{"before":true}'], { env });
    const tail = start(['tail', topic, '--interval', '100ms']);
    await new Promise((resolve) => setTimeout(resolve, 1_000));

    await runCli(['publish', topic, '{"n":1}'], { env });
    await runCli(['publish', topic, '{"n":2}'], { env });
    await until(() => tail.output.stdout.trim().split('\n').length >= 2);
    await new Promise((resolve) => setTimeout(resolve, 500));
    tail.child.kill('SIGTERM');
    expect(await tail.exited).toBe(0);

    const lines = tail.output.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(lines.map((line) => line.payload)).toEqual([{ n: 1 }, { n: 2 }]);
    expect((await (await library()).stats(topic))[0]).toMatchObject({ waiting: 3 });
  });

  it('stats --watch draws the table again every interval', async () => {
    const topic = uniqueTopic('watch');
    await runCli(['publish', topic, '{}'], { env });
    const watch = start(['stats', topic, '--watch', '--interval', '200ms']);
    await until(() => (watch.output.stdout.match(/^mailbus stats, every/gm) ?? []).length >= 3);
    watch.child.kill('SIGINT');
    expect(await watch.exited).toBe(0);
    // Not a terminal: tables one after another, without screen control codes.
    expect(watch.output.stdout).not.toContain('\x1b[');
    expect(watch.output.stdout).toMatch(new RegExp(`${topic} +default +1 +0 +0 +0 +0`));
  });

  it('replays and purges many dead letters with progress lines when not on a terminal', async () => {
    const topic = uniqueTopic('progress');
    const count = 150;
    const many = Array.from({ length: count }, (_, n) => JSON.stringify({ n })).join('\n');
    await runCli(['publish', topic, '--lines'], { env, input: `${many}\n` });
    await killAll(topic, count);

    const replayed = await runCli(['dlq', topic, 'replay', '--all'], { env });
    expect(replayed.stdout).toBe(`replayed ${count} dead letters into ${topic}/default\n`);
    const steps = replayed.stderr.trim().split('\n');
    expect(steps[0]).toBe(`mailbus: replaying 15/${count}`);
    expect(steps.at(-1)).toBe(`mailbus: replaying ${count}/${count}`);
    expect(steps.length).toBe(10);

    await killAll(topic, count);
    const purged = await runCli(['dlq', topic, 'purge', '--yes'], { env });
    expect(purged.stdout).toBe(`deleted ${count} dead letters\n`);
    expect(purged.stderr.trim().split('\n').at(-1)).toBe(`mailbus: purging ${count}/${count}`);
    expect((await (await library()).stats(topic))[0]).toMatchObject({ waiting: 0, dead: 0 });
  });

  it('backfills a new group from earliest with progress lines when not on a terminal', async () => {
    const topic = uniqueTopic('backfill-progress');
    const count = 150;
    const many = Array.from({ length: count }, (_, n) => JSON.stringify({ n })).join('\n');
    await runCli(['publish', topic, '--lines'], { env, input: `${many}\n` });

    const subscribed = await runCli(['subscribe', topic, 'audit', '--from', 'earliest'], { env });
    expect(subscribed.code).toBe(0);
    expect(subscribed.stdout).toBe(
      `subscribed group audit to topic ${topic} from its earliest message\n` +
        `backfilled ${count} messages from the topic\n`,
    );
    // The backfill reports every hundredth (2 messages here); a line follows about every tenth
    // of the work, and the last one is at the total. Nothing else is on stderr.
    const done = [16, 32, 48, 64, 80, 96, 112, 128, 144, 150];
    expect(subscribed.stderr).toBe(
      done.map((n) => `mailbus: backfilling ${n}/${count}\n`).join(''),
    );

    // A small backfill is quick: no progress at all.
    const few = await runCli(['subscribe', uniqueTopic('few'), 'audit', '--from', 'earliest'], {
      env,
    });
    expect(few.stderr).toBe('');
  });
});
