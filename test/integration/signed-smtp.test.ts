// Signed publishing end to end: through a real Postfix into Dovecot, a verifying worker hands
// its handler only the message signed with a key it trusts, and quarantines an unsigned and a
// forged one with their reasons.

import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import type { Message } from '../../src/index.js';
import { imapOptions, mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';

const SIGNING_KEY = 'shop-2026:9b7f3c1e5a2d4f6081726354a9b8c7d6';
const VERIFY_KEYS = `shop-2025:0f1e2d3c4b5a69788796a5b4c3d2e1f0,${SIGNING_KEY}`;

function swaks(to: string, headers: string[], body: string): void {
  const info = mailServers();
  const args = ['--server', `${info.host}:${info.smtpPort}`, '--from', 'mallory@example.net'];
  args.push('--to', to, '--body', body);
  for (const header of headers) {
    args.push('--header', header);
  }
  const result = spawnSync('swaks', args, { encoding: 'utf8', timeout: 30_000 });
  if (result.status !== 0) {
    throw new Error(`swaks failed (${result.status}): ${result.stderr}${result.stdout}`);
  }
}

describe('signed messages through Postfix', () => {
  it('hands over the signed message and quarantines an unsigned and a forged one', async () => {
    const info = mailServers();
    const topic = uniqueTopic('signed');
    const to = `${info.user}+${topic}.default@${info.domain}`;
    const publisher = await connect({ ...imapOptions(true), signingKey: SIGNING_KEY });
    const consumer = await connect({ ...imapOptions(), verifyKeys: VERIFY_KEYS });
    try {
      await consumer.subscribe(topic, 'default');
      const signedId = await publisher.publish(topic, { orderId: 1, total: 10 }, { key: 'c-1' });

      const json = ['Content-Type: application/json; charset=utf-8', 'MIME-Version: 1.0'];
      swaks(to, ['Message-Id: <unsigned-1@example.net>', ...json], '{"orderId": 2, "total": 0}');
      // A signature field copied from a real message onto another body.
      const forged = `v=1; k=shop-2026; t=${Math.floor(Date.now() / 1000)}; s=${'ab'.repeat(32)}`;
      swaks(
        to,
        ['Message-Id: <forged-1@example.net>', `X-Mailbus-Signature: ${forged}`, ...json],
        '{"orderId": 3, "total": 1000000}',
      );

      const handled: Message[] = [];
      const worker = consumer.consume(topic, (message) => void handled.push(message), {
        verify: true,
        maxMessages: 3,
        idleTimeoutMs: 20_000,
      });
      const summary = await worker.done;
      expect(summary).toMatchObject({ handled: 1, quarantined: 2, reason: 'max' });
      expect(handled.map((message) => [message.id, message.payload])).toEqual([
        [signedId, { orderId: 1, total: 10 }],
      ]);

      const quarantined = await consumer.quarantine(topic).list();
      const reasons = Object.fromEntries(quarantined.map((m) => [m.id, [m.reason, m.detail]]));
      expect(reasons).toEqual({
        'unsigned-1@example.net': ['unsigned', 'the message has no X-Mailbus-Signature field'],
        'forged-1@example.net': [
          'bad-signature',
          'the signature of key shop-2026 does not match the message',
        ],
      });
      expect((await consumer.stats(topic))[0]).toMatchObject({
        waiting: 0,
        inFlight: 0,
        handled: 1,
        quarantined: 2,
      });

      // Nothing was deleted: the quarantined copies are the mail as Postfix delivered it.
      const forgedCopy = await consumer.quarantine(topic).show('forged-1@example.net');
      expect(forgedCopy.raw.toString('latin1')).toContain('"total": 1000000');
      expect(forgedCopy.raw.toString('latin1')).toMatch(/^Received: /m);
    } finally {
      await publisher.close();
      await consumer.close();
    }
  });
});
