import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { Claim } from '../../src/store/store.js';
import { runCli } from '../support/cli.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const root = tempDir('quarantine');
const url = `maildir:${join(root, 'queue')}`;

/** Publishes one message and moves it to the quarantine the way a verifying worker does. */
async function quarantineOne(topic: string, payload: unknown): Promise<string> {
  const bus = await connect({ url });
  try {
    const id = await bus.publish(topic, payload);
    const claimer = await bus.store.claimer(topic, 'default', { consumer: 'checker' });
    const [claim] = (await claimer.claim(1)) as Claim[];
    const verdict = { reason: 'unsigned' as const, detail: 'no X-Mailbus-Signature field' };
    await claimer.quarantine(claim as Claim, verdict);
    await claimer.close();
    return id;
  } finally {
    await bus.close();
  }
}

describe('the quarantine of a group', () => {
  it('lists, shows and releases a quarantined message, and counts it in stats', async () => {
    const topic = uniqueTopic('quarantine');
    const id = await quarantineOne(topic, { order: 1 });

    const bus = await connect({ url });
    try {
      expect((await bus.stats(topic))[0]).toMatchObject({ waiting: 0, quarantined: 1 });
      const quarantine = bus.quarantine(topic);
      const [listed] = await quarantine.list();
      expect(listed).toMatchObject({
        id,
        reason: 'unsigned',
        detail: 'no X-Mailbus-Signature field',
      });
      expect(listed?.quarantinedAt?.getTime()).toBeGreaterThan(Date.now() - 60_000);

      const shown = await quarantine.show(id);
      expect(shown.raw.toString('latin1')).toMatch(/^X-Mailbus-Quarantine-Reason: unsigned: no/);

      expect(await quarantine.release([id])).toBe(1);
      expect((await bus.stats(topic))[0]).toMatchObject({ waiting: 1, quarantined: 0 });
      const received: unknown[] = [];
      const worker = bus.consume(topic, (message) => void received.push(message), {
        maxMessages: 1,
      });
      await worker.done;
      // Released without its quarantine fields: the handler sees the message as published.
      expect(received).toMatchObject([{ id, payload: { order: 1 } }]);
      const [archived] = await bus.store.list({ topic, group: 'default', folder: 'archive' });
      expect(archived?.raw.toString('latin1')).not.toMatch(/X-Mailbus-Quarantine/i);
      expect(archived?.raw.toString('latin1')).toMatch(/^From: /);
    } finally {
      await bus.close();
    }
  });

  it('refuses to release an id that is not in the quarantine, naming it', async () => {
    const topic = uniqueTopic('quarantine');
    await quarantineOne(topic, 'x');
    const bus = await connect({ url });
    try {
      await expect(bus.quarantine(topic).release(['nope@mailbus'])).rejects.toThrow(
        `no quarantined message nope@mailbus in ${topic}/default`,
      );
      expect((await bus.stats(topic))[0]).toMatchObject({ quarantined: 1 });
    } finally {
      await bus.close();
    }
  });

  it('is managed from the command line: list, show, release', async () => {
    const topic = uniqueTopic('quarantine');
    const id = await quarantineOne(topic, { order: 2 });
    const env = { MAILBUS_URL: url };

    const list = await runCli(['quarantine', topic, 'list'], { env });
    expect(list.stderr).toBe('');
    expect(list.stdout).toMatch(/ID\s+QUARANTINED AT\s+REASON\s+DETAIL/);
    expect(list.stdout).toContain(id);
    expect(list.stdout).toMatch(/unsigned\s+no X-Mailbus-Signature field/);

    const json = await runCli(['quarantine', topic, 'list', '--json'], { env });
    expect(JSON.parse(json.stdout.trim())).toMatchObject({ id, reason: 'unsigned' });

    const show = await runCli(['quarantine', topic, 'show', id], { env });
    expect(show.stdout).toContain(`Message-ID: <${id}>`);

    const stats = await runCli(['stats', topic], { env });
    expect(stats.stdout).toMatch(new RegExp(`${topic}\\s+default\\s+0\\s+0\\s+0\\s+0\\s+0\\s+1`));

    const bad = await runCli(['quarantine', topic, 'drop', id], { env });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('mailbus: unknown quarantine action "drop": use list, show, release\n');

    const release = await runCli(['quarantine', topic, 'release', id], { env });
    expect(release.stdout).toBe(`released 1 messages into ${topic}/default\n`);
    const after = await runCli(['quarantine', topic, 'list'], { env });
    expect(after.stdout).toBe(`no quarantined messages in ${topic}/default\n`);

    // A planted message whose Subject holds a terminal escape sequence: shown without it.
    const planted = join(root, 'queue', `.${topic}.default.Quarantine`, 'new', '1.planted.x');
    writeFileSync(planted, 'Message-ID: <esc@x>\r\nSubject: \x1b]2;owned\x07\x1b[2J\r\n\r\nhi\r\n');
    const escaped = await runCli(['quarantine', topic, 'show', 'esc@x'], { env });
    expect(escaped.stdout).toContain('Subject: ?]2;owned??[2J');
    expect(escaped.stdout.includes('\x1b') || escaped.stdout.includes('\x07')).toBe(false);
  });
});
