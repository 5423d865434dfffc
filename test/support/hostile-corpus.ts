// Hostile and broken mail, each with what must become of it: a quarantine reason (its start),
// for the tests that plant it in a Maildir and that send it through Postfix.

import { createHash } from 'node:crypto';

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
export const CORPUS: [string, Buffer, string][] = [
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
