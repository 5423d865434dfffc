import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { Message } from '../../src/message/message.js';
import type { Claim } from '../../src/store/store.js';
import { runCli } from '../support/cli.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const root = tempDir('signed');
const url = `maildir:${join(root, 'queue')}`;
const KEY = 'ops-1:5f0c9a8e7d6b4c3a2918f7e6d5c4b3a2';
const ROTATED = `ops-2:00112233445566778899aabbccddeeff,${KEY}`;

describe('signed messages on a Maildir', () => {
  it('retries a verified message after its signature window, sealed by the consumer', async () => {
    const topic = uniqueTopic('sealed');
    const bus = await connect({ url, signingKey: KEY, verifyKeys: KEY });
    try {
      const id = await bus.publish(topic, { n: 1 });
      const attempts: number[] = [];
      const worker = bus.consume(
        topic,
        (message: Message) => {
          attempts.push(message.attempt);
          if (message.attempt === 1) {
            throw new Error('first attempt fails');
          }
        },
        { verify: true, signatureWindowMs: 1500, backoffMs: 3000, maxMessages: 2 },
      );
      const summary = await worker.done;
      // The second attempt came 3 s later, past the 1.5 s window: the seal let it through.
      expect(summary).toMatchObject({ handled: 1, failed: 1, quarantined: 0 });
      expect(attempts).toEqual([1, 2]);
      const [archived] = await bus.store.list({ topic, group: 'default', folder: 'archive' });
      expect(archived?.raw.toString('latin1')).toMatch(/^X-Mailbus-Seal: v=1; k=ops-1;/m);
      expect(archived?.raw.toString('latin1')).toContain(`<${id}>`);
    } finally {
      await bus.close();
    }
  });

  it('quarantines a signed message stored a second time as replayed', async () => {
    const topic = uniqueTopic('replay');
    const bus = await connect({ url, signingKey: KEY, verifyKeys: KEY });
    try {
      await bus.publish(topic, { n: 1 }, { id: 'pay-42' });
      const claimer = await bus.store.claimer(topic, 'default', { consumer: 'spy' });
      const [copy] = (await claimer.claim(1)) as Claim[];
      await claimer.release(copy as Claim);
      await claimer.close();
      const captured = Buffer.from((copy as Claim).raw);

      const handled: string[] = [];
      const consume = () =>
        bus.consume(topic, (message) => void handled.push(message.id), {
          verify: true,
          maxMessages: 1,
        }).done;
      expect(await consume()).toMatchObject({ handled: 1 });
      await bus.store.restore(topic, 'default', captured);
      expect(await consume()).toMatchObject({ handled: 0, quarantined: 1 });
      expect(handled).toEqual(['pay-42@mailbus']);
      const [replayed] = await bus.quarantine(topic).list();
      expect(replayed).toMatchObject({ id: 'pay-42@mailbus', reason: 'replayed' });
    } finally {
      await bus.close();
    }
  });

  it('signs, verifies and releases from the command line with rotated keys', async () => {
    const topic = uniqueTopic('cli-signed');
    const keyFile = join(root, 'signing.key');
    writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
    const env = { MAILBUS_URL: url };

    const signed = await runCli(['publish', topic, '{"n":1}', '--signing-key-file', keyFile], {
      env,
    });
    expect(signed.stderr).toBe('');
    const byEnv = await runCli(['publish', topic, '{"n":2}'], {
      env: { ...env, MAILBUS_SIGNING_KEY: KEY },
    });
    const unsigned = await runCli(['publish', topic, '{"n":3}'], { env });
    expect(unsigned.code).toBe(0);

    const verifying = { ...env, MAILBUS_VERIFY_KEYS: ROTATED };
    const consumed = await runCli(['consume', topic, '--verify', '--max', '3'], {
      env: verifying,
    });
    expect(consumed.code).toBe(0);
    const payloads = consumed.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line).payload);
    expect(payloads).toEqual([{ n: 1 }, { n: 2 }]);
    expect(consumed.stderr).toBe('mailbus: a message was quarantined: see mailbus quarantine\n');

    const list = await runCli(['quarantine', topic, 'list', '--json'], { env });
    const [entry] = list.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(entry).toMatchObject({ id: unsigned.stdout.trim(), reason: 'unsigned' });

    // Released with the verification keys at hand, the message is sealed and handled.
    const release = await runCli(['quarantine', topic, 'release', entry.id], { env: verifying });
    expect(release.stdout).toBe(`released 1 messages into ${topic}/default\n`);
    const again = await runCli(['consume', topic, '--verify', '--max', '1'], { env: verifying });
    expect(JSON.parse(again.stdout).payload).toEqual({ n: 3 });
    expect(byEnv.stdout.trim()).not.toBe(signed.stdout.trim());
  });

  it('refuses --verify without keys and a malformed key, in one line each', async () => {
    const topic = uniqueTopic('cli-signed');
    const env = { MAILBUS_URL: url };
    const noKeys = await runCli(['consume', topic, '--verify', '--max', '1'], { env });
    expect(noKeys.code).toBe(1);
    expect(noKeys.stderr).toBe(
      'mailbus: verifying needs keys: give verifyKeys to connect() (MAILBUS_VERIFY_KEYS)\n',
    );
    const short = await runCli(['publish', topic, '1'], {
      env: { ...env, MAILBUS_SIGNING_KEY: 'k:short-secret' },
    });
    expect(short.stderr).toBe(
      'mailbus: signingKey: the secret of key k is 12 bytes; at least 16 are needed ' +
        '(openssl rand -hex 32 makes a good one)\n',
    );
    expect(short.stderr).not.toContain('short-secret');
  });
});
