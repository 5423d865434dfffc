// Hostile and broken mail planted straight into a group's Maildir, as a compromised or buggy
// MTA would leave it: none of it may crash the worker, reach a shell, be followed out of the
// Maildir, or hold up the ordinary message queued behind it; what cannot be handled is
// quarantined with its reason.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { Message } from '../../src/message/message.js';
import { releasedCopy } from '../../src/security/quarantine.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const root = tempDir('hostile');
const url = `maildir:${join(root, 'queue')}`;

function nested(depth: number): string {
  let body = 'Content-Type: text/plain\r\n\r\ninnermost\r\n';
  for (let level = 0; level < depth; level += 1) {
    const boundary = `b${level}`;
    body =
      `Content-Type: multipart/mixed; boundary="${boundary}"\r\n\r\n` +
      `--${boundary}\r\n${body}\r\n--${boundary}--\r\n`;
  }
  return body;
}

const json = 'Content-Type: application/json; charset=utf-8\r\n';

/** Bytes with no structure at all, the same on every run: a digest chain. */
function garbage(length: number): Buffer {
  const chunks: Buffer[] = [];
  let block = createHash('sha256').update('garbage').digest();
  for (let size = 0; size < length; size += block.length) {
    chunks.push(block);
    block = createHash('sha256').update(block).digest();
  }
  return Buffer.concat(chunks).subarray(0, length);
}

/** File name → message text, and what must become of it. */
const CORPUS: [string, Buffer, string][] = [
  ['empty', Buffer.alloc(0), 'malformed: the message is empty (0 bytes)'],
  [
    'not-json',
    // It names a reason of its own, which must not survive.
    Buffer.from(
      `Message-ID: <not-json@x>\r\nX-Mailbus-Quarantine-Reason: replayed: fake\r\n${json}\r\n` +
        '{"a": 1,,}\r\n',
    ),
    'malformed: body is declared application/json but is not valid JSON',
  ],
  [
    'bad-charset',
    Buffer.from(`Message-ID: <bad-charset@x>\r\n` + json.replace('utf-8', 'x-klingon') + '\r\n{}'),
    'malformed: JSON body is not valid x-klingon',
  ],
  [
    'bad-utf8',
    Buffer.concat([
      Buffer.from(`Message-ID: <bad-utf8@x>\r\n${json}\r\n{"name": "`),
      Buffer.from([0xc3, 0x28, 0xff]),
      Buffer.from('"}\r\n'),
    ]),
    'malformed: JSON body is not valid utf-8',
  ],
  [
    'bad-utf8-text',
    Buffer.concat([
      Buffer.from('Message-ID: <bad-utf8-text@x>\r\nContent-Type: text/plain; charset=utf-8\r\n'),
      Buffer.from('\r\nhello '),
      Buffer.from([0xc3, 0x28, 0xff, 0xfe]),
      Buffer.from(' world\r\n'),
    ]),
    'malformed: the text body has bytes that are not valid in its charset',
  ],
  ['garbage', garbage(4096), 'malformed: the message does not begin with a header field'],
  [
    'many-headers',
    Buffer.from(`Message-ID: <many@x>\r\n${'X-Filler: 1\r\n'.repeat(1500)}\r\nhello\r\n`),
    'malformed: the message has more than 1000 header fields',
  ],
  [
    'huge-header',
    Buffer.from(`Message-ID: <huge@x>\r\nX-Big: ${'a'.repeat(1100 * 1024)}\r\n\r\nhi\r\n`),
    'malformed: message cannot be parsed as MIME: Maximum header size of 1048576 bytes',
  ],
  [
    'oversized',
    Buffer.from(`Message-ID: <big@x>\r\n${json}\r\n"${'z'.repeat(2_100_000)}"\r\n`),
    'too-large: the message is 2100074 bytes; the limit is 2000000',
  ],
  [
    'deep-mime',
    Buffer.from(`Message-ID: <deep@x>\r\nMIME-Version: 1.0\r\n${nested(40)}`),
    'malformed: message cannot be parsed as MIME: Maximum MIME nesting depth of 32',
  ],
];

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
      expect((await bus.stats(topic))[0]).toMatchObject({ waiting: 0, quarantined: CORPUS.length });

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
