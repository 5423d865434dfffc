// Hostile and broken mail planted straight into a group's Maildir, as a compromised or buggy
// MTA would leave it: none of it may crash the worker, reach a shell, be followed out of the
// Maildir, or hold up the ordinary message queued behind it; what cannot be handled is
// quarantined with its reason.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { Message } from '../../src/message/message.js';
import { releasedCopy } from '../../src/security/quarantine.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { CORPUS } from '../support/hostile-corpus.js';
import { tempDir } from '../support/temp.js';

const root = tempDir('hostile');
const url = `maildir:${join(root, 'queue')}`;

describe('hostile mail in a Maildir', () => {
  it('quarantines what cannot be handled, follows no link, and handles the rest', async () => {
    const topic = uniqueTopic('hostile');
    const bus = await connect({ url, maxMessageBytes: 2_000_000 });
    try {
      await bus.subscribe(topic, 'default');
      const fresh = join(root, 'queue', `.${topic}.default`, 'new');
      CORPUS.forEach(([name, raw], i) => writeFileSync(join(fresh, `${1000 + i}.${name}.x`), raw));

      // Raw 8-bit bytes in header fields, and a multipart whose boundary never comes: read as
      // well as they can be and handled, not refused.
      const eightBit = Buffer.concat([
        Buffer.from('Message-ID: <eight-bit@x>\r\nSubject: caf'),
        Buffer.from([0xe9, 0xff]),
        Buffer.from('\r\nContent-Type: text/plain\r\n\r\nplain text\r\n'),
      ]);
      writeFileSync(join(fresh, '2000.eight-bit.x'), eightBit);
      const noBoundary =
        'Message-ID: <no-boundary@x>\r\nContent-Type: multipart/mixed; boundary="zz"\r\n\r\n' +
        '--yy\r\nContent-Type: text/plain\r\n\r\nlost part\r\n';
      writeFileSync(join(fresh, '2001.no-boundary.x'), noBoundary);

      // A link to a file outside the queue, and a FIFO that would block a reader for ever.
      const secret = join(root, 'secret.txt');
      writeFileSync(secret, 'Subject: stolen\r\n\r\nroot:x:0:0\r\n');
      symlinkSync(secret, join(fresh, '3000.link.x'));
      execFileSync('mkfifo', [join(fresh, '3001.fifo.x')]);
      // A directory is no message: left where it is, neither counted nor claimed.
      mkdirSync(join(fresh, '3002.dir.x'));

      await bus.publish(topic, { fine: true });

      const handled: Message[] = [];
      const worker = bus.consume(topic, (message) => void handled.push(message), {
        idleTimeoutMs: 3000,
        concurrency: 2,
      });
      const warnings: string[] = [];
      worker.on('warning', (err) => warnings.push(err.message));
      const summary = await worker.done;

      expect(summary).toMatchObject({ quarantined: CORPUS.length, handled: 3, deadLettered: 0 });
      const byId = new Map(handled.map((message) => [message.id, message]));
      expect(byId.get('eight-bit@x')?.payload).toBe('plain text\n');
      expect(byId.has('no-boundary@x')).toBe(true);
      expect([...byId.values()].map((message) => message.payload)).toContainEqual({ fine: true });
      expect(JSON.stringify(handled)).not.toContain('root:x:0:0');
      expect(readFileSync(secret, 'utf8')).toContain('root:x:0:0');
      expect(warnings).toEqual([]);

      const quarantined = await bus.quarantine(topic).list();
      const reasons = quarantined.map((message) => `${message.reason}: ${message.detail}`).sort();
      const expected = CORPUS.map(([, , reason]) => reason).sort();
      expect(reasons).toHaveLength(expected.length);
      reasons.forEach((reason, i) => expect(reason.startsWith(expected[i] as string)).toBe(true));
      expect((await bus.stats(topic))[0]).toMatchObject({
        waiting: 0,
        inFlight: 0,
        quarantined: CORPUS.length,
      });
      expect(existsSync(join(fresh, '3002.dir.x'))).toBe(true);
      expect(await bus.store.list({ topic, group: 'default', folder: 'waiting' })).toEqual([]);

      // The oversized message was copied to the quarantine from disk, not loaded: still whole.
      const kept = await bus.store.list({ topic, group: 'default', folder: 'quarantine' });
      const big = kept.find((message) => message.raw.includes('<big@x>'));
      const original = CORPUS.find(([name]) => name === 'oversized')?.[1];
      expect(big && releasedCopy(big.raw).equals(original as Buffer)).toBe(true);
    } finally {
      await bus.close();
    }
  });
});
