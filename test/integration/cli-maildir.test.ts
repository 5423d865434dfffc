import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { uniqueTopic } from '../support/store-conformance.js';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/temp.js';

const root = tempDir('cli');
const url = `maildir:${join(root, 'queue')}`;
const env = { MAILBUS_URL: url };

describe('the command line on a Maildir', () => {
  it('round-trips publish --lines and consume --exec byte for byte', async () => {
    const topic = uniqueTopic('roundtrip');
    const lines = [
      '{"n":1,"text":"plain"}',
      '{"n":2,"text":"caf\u00e9 \u2713 \\"quoted\\" $HOME `id` $(rm -rf /) ; | &"}',
      '{"n":3,"nested":{"a":[1,2.5,null,true,false]},"emoji":"\ud83d\ude80"}',
      '["array",0]',
      '"just a string"',
      '42',
    ];
    const published = await runCli(['publish', topic, '--lines'], {
      env,
      input: lines.join('\n') + '\n',
    });
    expect(published.stderr).toBe('');
    expect(published.code).toBe(0);
    const ids = published.stdout.trim().split('\n');
    expect(ids).toHaveLength(lines.length);

    const out = join(root, `${topic}.out`);
    const consumed = await runCli(
      ['consume', topic, '--exec', `cat >> '${out}'; printf '\\n' >> '${out}'`, '--max', '6'],
      { env },
    );
    expect(consumed.stderr).toBe('');
    expect(consumed.code).toBe(0);
    const received = readFileSync(out, 'utf8').trimEnd().split('\n');
    expect(received).toEqual(lines);
  });

  it('gives --exec the metadata in MAILBUS_* variables and retries a failing command', async () => {
    const topic = uniqueTopic('exec');
    const pub = await runCli(
      ['publish', topic, '{"a":1}', '--key', 'k-1', '--id', 'fixed-1', '--header', 'X-Tenant=acme'],
      { env },
    );
    expect(pub.stdout).toBe('fixed-1@mailbus\n');

    const out = join(root, `${topic}.env`);
    const script =
      `printf '%s|%s|%s|%s|%s|%s\\n' "$MAILBUS_ID" "$MAILBUS_TOPIC" "$MAILBUS_GROUP" ` +
      `"$MAILBUS_ATTEMPT" "$MAILBUS_KEY" "$MAILBUS_HEADERS" >> '${out}'; ` +
      `[ "$MAILBUS_ATTEMPT" -ge 2 ]`;
    const consumed = await runCli(['consume', topic, '--exec', script, '--max', '2'], { env });
    expect(consumed.code).toBe(0);
    const rows = readFileSync(out, 'utf8').trim().split('\n');
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatch(new RegExp(`^fixed-1@mailbus\\|${topic}\\|default\\|1\\|k-1\\|\\{`));
    expect(rows[1]).toMatch(/\|2\|k-1\|/);
    expect(JSON.parse(rows[0]?.split('|')[5] ?? '')).toMatchObject({ 'x-tenant': 'acme' });
  });

  it('prints each message as a JSON line without --exec, and reports stats', async () => {
    const topic = uniqueTopic('print');
    await runCli(['subscribe', topic, 'billing'], { env });
    await runCli(['publish', topic, '{"order":7}', '--header', 'X-Source=test'], { env });

    const consumed = await runCli(['consume', topic, '--group', 'billing', '--max', '1'], { env });
    expect(consumed.code).toBe(0);
    const line = JSON.parse(consumed.stdout);
    expect(line).toMatchObject({
      topic,
      group: 'billing',
      attempt: 1,
      payload: { order: 7 },
      headers: { 'x-source': 'test' },
    });
    expect(line.id).toMatch(/@mailbus$/);

    const stats = await runCli(['stats', topic, '--json'], { env });
    expect(JSON.parse(stats.stdout)).toEqual({
      groups: [
        {
          topic,
          group: 'billing',
          waiting: 0,
          scheduled: 0,
          inFlight: 0,
          handled: 1,
          dead: 0,
          quarantined: 0,
          consumers: 0,
        },
      ],
    });
    const table = await runCli(['stats', topic], { env });
    expect(table.stdout).toMatch(
      /TOPIC\s+GROUP\s+WAITING\s+SCHEDULED\s+IN FLIGHT\s+HANDLED\s+DEAD\s+QUARANTINED\s+CONSUMERS/,
    );
    expect(table.stdout).toMatch(
      new RegExp(`${topic}\\s+billing\\s+0\\s+0\\s+0\\s+1\\s+0\\s+0\\s+0\\n`),
    );
  });

  it('subscribes a group from earliest, from a time or from now', async () => {
    const topic = uniqueTopic('replay');
    const publish = async (n: number): Promise<string> => {
      const result = await runCli(['publish', topic, JSON.stringify({ n })], { env });
      expect(result.code).toBe(0);
      return result.stdout.trim();
    };
    const earlier = [await publish(1), await publish(2)];
    await new Promise((resolve) => setTimeout(resolve, 20));
    const from = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const recent = [await publish(3)];

    const all = await runCli(['subscribe', topic, 'everything', '--from', 'earliest'], { env });
    expect(all.stderr).toBe('');
    expect(all.stdout).toBe(
      `subscribed group everything to topic ${topic} from its earliest message\n` +
        'backfilled 3 messages from the topic\n',
    );
    const since = await runCli(['subscribe', topic, 'since', '--from', from], { env });
    expect(since.stdout).toContain(`from ${from}\nbackfilled 1 message from the topic\n`);
    const now = await runCli(['subscribe', topic, 'now', '--from', 'now'], { env });
    expect(now.stdout).toBe(`subscribed group now to topic ${topic}\n`);
    await runCli(['subscribe', topic, 'plain'], { env });
    const later = [await publish(4)];

    const idsOf = async (group: string): Promise<string[]> => {
      const consumed = await runCli(['consume', topic, '--group', group, '--wait', '300ms'], {
        env,
      });
      expect(consumed.code).toBe(0);
      return consumed.stdout
        .trim()
        .split('\n')
        .map((line) => (JSON.parse(line) as { id: string }).id);
    };
    expect(await idsOf('everything')).toEqual([...earlier, ...recent, ...later]);
    expect(await idsOf('since')).toEqual([...recent, ...later]);
    expect(await idsOf('now')).toEqual(later);
    expect(await idsOf('plain')).toEqual(later);

    const again = await runCli(['subscribe', topic, 'since', '--from', 'earliest'], { env });
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/group since of topic .* exists already/);
    expect(again.stderr.trim().split('\n')).toHaveLength(1);
  });

  it.each([
    [['publish', 'Bad.Topic', '{}'], /topic name "Bad.Topic" may not start with 'B'/],
    [['publish', 'orders', '{not json'], /the JSON argument is not valid JSON/],
    [['publish', 'orders', '{}', '--header', 'Content-Type=x'], /set by mailbus itself/],
    [['consume', 'orders', '--concurrency', 'zero'], /--concurrency must be a whole number/],
    [['consume', 'orders', '--wait', 'soon'], /--wait must be a duration/],
    // Node.js timers wait at most 2^31 - 1 ms: a longer one would fire at once.
    [['consume', 'orders', '--timeout', '30d'], /handlerTimeoutMs may be at most 2147483647 ms/],
    [['consume', 'orders', '--lease', '100d'], /leaseMs may be at most 2147483647 ms/],
    [['publish', 'orders', '{}', '--delay', '99999999999d'], /past the last date a clock can show/],
    [
      ['subscribe', 'orders', 'late', '--from', 'yesterday'],
      /--from must be now, earliest .*"yesterday"/,
    ],
    [['subscribe', 'orders', 'late', '--from', '2026-13-45'], /--from must be .*"2026-13-45"/],
    // A day the month does not have: not rolled over into the next month.
    [['subscribe', 'orders', 'late', '--from', '2026-02-30'], /--from must be .*"2026-02-30"/],
    [
      ['publish', 'orders', '{}', '--not-before', '2026-04-31T10:00:00Z'],
      /--not-before must be an ISO 8601 time .*"2026-04-31T10:00:00Z"/,
    ],
    [['stats', '--url', 'imap://bus:hunter2@127.0.0.1:1'], /cannot reach|ECONNREFUSED|connect/i],
    [['stats', '--url', 'ftp://x'], /unsupported store URL scheme/],
    [['consume', 'orders', '--dead-retention', '0'], /--dead-retention\) must be more than 0/],
    [['dashboard', '--port', '99999'], /--port must be a port number from 0 to 65535, not "99999"/],
    [['consume', 'orders', '--metrics-port', '-1'], /--metrics-port must be a port number/],
    // A typo in --group reads as no such group, not as an empty one.
    [['dlq', 'orders', '--group', 'nosuch', 'list'], /topic orders has no group nosuch/],
    [['quarantine', 'orders', '--group', 'nosuch', 'list'], /topic orders has no group nosuch/],
    [['peek', 'orders', '--group', 'nosuch'], /topic orders has no group nosuch/],
  ])('fails with one clear line for %j', async (args, expected) => {
    const result = await runCli(args, { env });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(expected);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(result.stderr).not.toContain('hunter2');
  });

  it('answers --help for every command', async () => {
    for (const command of ['publish', 'consume', 'subscribe', 'stats', 'demo']) {
      const result = await runCli([command, '--help']);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain(`Usage: mailbus ${command}`);
    }
    const top = await runCli(['--help']);
    expect(top.stdout).toContain('MAILBUS_URL');

    // A duration's default is shown once, as a duration.
    const stats = await runCli(['stats', '--help']);
    expect(stats.stdout).toContain('how often --watch draws it (2s)\n');
  });

  it('says what dlq replay needs when it is given neither ids nor --all, or both', async () => {
    const topic = uniqueTopic('replay-args');
    const neither = await runCli(['dlq', topic, 'replay'], { env });
    expect(neither.code).toBe(1);
    expect(neither.stderr).toContain('needs the ids of the dead letters to replay, or --all');
    const both = await runCli(['dlq', topic, 'replay', 'some-id', '--all'], { env });
    expect(both.code).toBe(1);
    expect(both.stderr).toContain('takes message ids or --all, not both');
  });
});
