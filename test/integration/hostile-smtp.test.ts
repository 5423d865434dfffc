// The hostile corpus of hostile-maildir.test.ts sent through a real Postfix into Dovecot, as a
// stranger on the mail path would send it: each message ends quarantined with its reason or is
// handled as docs/security.md says, no worker fails, and the ordinary message sent after them
// is handled too.

import nodemailer from 'nodemailer';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import type { Message } from '../../src/index.js';
import { readQuarantined } from '../../src/security/quarantine.js';
import { CORPUS } from '../support/hostile-corpus.js';
import { imapOptions, mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';

describe('hostile mail through Postfix', () => {
  it('quarantines each malformed message with its reason and handles the one behind', async () => {
    const info = mailServers();
    const topic = uniqueTopic('hostile-smtp');
    const to = `${info.user}+${topic}.default@${info.domain}`;
    const bus = await connect({ ...imapOptions(), maxMessageBytes: 2_000_000 });
    const smtp = nodemailer.createTransport({
      host: info.host,
      port: info.smtpPort,
      secure: false,
      ignoreTLS: true,
    });
    try {
      await bus.subscribe(topic, 'default');
      const outcomes = new Map<string, string>();
      for (const [name, raw] of CORPUS) {
        try {
          await smtp.sendMail({ envelope: { from: 'mallory@example.net', to }, raw });
          outcomes.set(name, 'sent');
        } catch (err) {
          outcomes.set(name, `refused: ${(err as Error).message}`);
        }
      }
      const fine =
        'Message-ID: <fine@x>\r\nContent-Type: application/json\r\n\r\n{"fine":true}\r\n';
      await smtp.sendMail({ envelope: { from: 'mallory@example.net', to }, raw: fine });
      expect([...outcomes.values()]).toEqual(CORPUS.map(() => 'sent'));

      const handled: Message[] = [];
      const worker = bus.consume(topic, (message) => void handled.push(message), {
        idleTimeoutMs: 8_000,
      });
      const warnings: string[] = [];
      worker.on('warning', (err) => warnings.push(err.message));
      const summary = await worker.done;
      expect(warnings).toEqual([]);
      expect(summary).toMatchObject({
        handled: 3,
        quarantined: CORPUS.length - 2,
        deadLettered: 0,
      });

      // Postfix changes two cases on the way (docs/security.md says so): it gives the empty
      // message its own header fields, which make it mail without a body, and it cuts a header
      // at its header_size_limit (100 KB), after which the huge-header message is ordinary mail.
      const byId = new Map(handled.map((message) => [message.id, message]));
      expect(byId.get('fine@x')?.payload).toEqual({ fine: true });
      expect(byId.get('huge@x')?.payload).toBe('hi\n');
      expect((byId.get('huge@x')?.headers['x-big'] ?? '').length).toBeLessThan(110_000);
      const empty = handled.find((message) => message.payload === null);
      expect(empty?.payload).toBeNull();
      expect(empty?.headers.received).toBeDefined();

      // Every other case is quarantined with the reason it gets in a Maildir; the garbage,
      // given a header by Postfix, is now a text body that is not valid UTF-8, and the
      // oversized message is larger by Postfix's trace fields.
      const expected = CORPUS.filter(([name]) => name !== 'empty' && name !== 'huge-header').map(
        ([name, , reason]) =>
          name === 'garbage'
            ? 'malformed: the text body has bytes that are not valid'
            : name === 'oversized'
              ? 'too-large: the message is '
              : reason,
      );
      const kept = await bus.store.list({ topic, group: 'default', folder: 'quarantine' });
      const found = await Promise.all(kept.map((message) => readQuarantined(message.raw)));
      const reasons = found.map((info) => `${info.reason}: ${info.detail}`).sort();
      expect(reasons).toHaveLength(expected.length);
      const unmatched = [...reasons];
      for (const reason of expected) {
        const at = unmatched.findIndex((found) => found.startsWith(reason));
        expect(at, `${reason} in ${unmatched.join(' | ')}`).toBeGreaterThanOrEqual(0);
        unmatched.splice(at, 1);
      }

      // The oversized one was copied on the server (CATENATE): our fields on top, then all of it.
      const big = kept.find((message) => message.raw.includes('<big@x>'));
      expect(big?.raw.toString('latin1')).toMatch(/^X-Mailbus-Quarantine-Reason: too-large/);
      // Postfix broke its 2 MB line at line_length_limit; every byte of it is still there.
      const text = big?.raw.toString('latin1') ?? '';
      const zs = text.slice(text.indexOf('\r\n\r\n')).match(/z/g)?.length;
      expect(zs).toBe(2_100_000);
      expect((await bus.stats(topic))[0]).toMatchObject({ waiting: 0, inFlight: 0 });
    } finally {
      smtp.close();
      await bus.close();
    }
  });
});
