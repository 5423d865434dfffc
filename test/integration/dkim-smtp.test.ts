// DKIM end to end: mailbus DKIM-signs what it publishes through a real Postfix, and a consumer
// that requires DKIM from an allow-list hands over only mail that a listed domain signed. The
// keys are made here, and DNS is answered from this file, never from the network.

import { generateKeyPairSync } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import type { Message } from '../../src/index.js';
import { imapOptions, mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';

function dkimKey(domainName: string, keySelector: string) {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const der = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  return {
    signing: {
      domainName,
      keySelector,
      privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    },
    record: [`${keySelector}._domainkey.${domainName}`, `v=DKIM1; k=rsa; p=${der}`] as const,
  };
}

describe('DKIM through Postfix', () => {
  it('hands over mail signed by an allowed domain and quarantines the rest', async () => {
    const info = mailServers();
    const topic = uniqueTopic('dkim');
    const shop = dkimKey('shop.example', 'mb2026');
    const stranger = dkimKey('stranger.example', 'sel');
    const zone = new Map<string, string>([shop.record, stranger.record]);
    const lookups: string[] = [];
    const resolver = async (name: string, rrtype: string) => {
      lookups.push(`${rrtype} ${name}`);
      const txt = rrtype === 'TXT' ? zone.get(name) : undefined;
      if (txt === undefined) {
        throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
      }
      return [[txt]];
    };

    const publisher = await connect({ ...imapOptions(true), dkim: shop.signing });
    const other = await connect({ ...imapOptions(true), dkim: stranger.signing });
    const consumer = await connect(imapOptions());
    try {
      await consumer.subscribe(topic, 'default');
      const signedId = await publisher.publish(topic, { orderId: 1 }, { key: 'c-1' });
      const strangerId = await other.publish(topic, { orderId: 2 });
      const to = `${info.user}+${topic}.default@${info.domain}`;
      const swaks = spawnSync(
        'swaks',
        [
          ...['--server', `${info.host}:${info.smtpPort}`, '--from', 'x@shop.example'],
          ...['--to', to, '--header', 'Message-Id: <plain-1@shop.example>'],
          ...['--header', 'Content-Type: application/json', '--body', '{"orderId": 3}'],
        ],
        { encoding: 'utf8', timeout: 30_000 },
      );
      expect(swaks.status).toBe(0);

      const handled: Message[] = [];
      const worker = consumer.consume(topic, (message) => void handled.push(message), {
        requireDkim: { domains: ['Shop.Example'], resolver },
        maxMessages: 3,
        idleTimeoutMs: 20_000,
      });
      expect(await worker.done).toMatchObject({ handled: 1, quarantined: 2 });
      expect(handled.map((message) => [message.id, message.payload])).toEqual([
        [signedId, { orderId: 1 }],
      ]);
      expect(lookups).toContain('TXT mb2026._domainkey.shop.example');

      const reasons = Object.fromEntries(
        (await consumer.quarantine(topic).list()).map((m) => [m.id, `${m.reason}: ${m.detail}`]),
      );
      expect(reasons).toEqual({
        [strangerId]: 'dkim: signed by stranger.example, which is not an allowed domain',
        'plain-1@shop.example': 'dkim: the message has no DKIM signature',
      });
    } finally {
      await publisher.close();
      await other.close();
      await consumer.close();
    }
  });
});
