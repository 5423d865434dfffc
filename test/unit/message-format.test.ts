import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/errors.js';
import MimeNode from 'nodemailer/lib/mime-node';
import {
  build7bit,
  composeMessage,
  encodePayload,
  newMessageId,
  normaliseMessageId,
  threadRootId,
} from '../../src/message/compose.js';
import { decodeMessage, derivedMessageId } from '../../src/message/decode.js';
import { setHeaders } from '../../src/message/rewrite.js';

const options = { from: 'mailbus <mailbus@example.org>', maxMessageBytes: 1 << 20 };
const context = { topic: 'orders', group: 'default' };

describe('composing and decoding a message', () => {
  it('round-trips payload, id, key, priority and extra headers', async () => {
    const payload = { orderId: 12345, note: 'café ✓ "quoted"', items: [1, 2.5, null, true] };
    const composed = await composeMessage(
      'orders',
      {
        payload,
        id: 'order-12345',
        key: 'kunde "Zoë" 7',
        priority: 'high',
        headers: { 'X-Tenant': 'acme' },
      },
      options,
    );
    expect(composed.id).toBe('order-12345@mailbus');

    const text = composed.raw.toString('latin1');
    expect(text).toMatch(/^Message-ID: <order-12345@mailbus>\r$/m);
    expect(text).toMatch(/^X-Mailbus-Topic: orders\r$/m);
    expect(text).toMatch(/^X-Mailbus-Key: =\?UTF-8\?Q\?kunde/m);
    // One key, one thread: every message of the key replies to the same derived root.
    const root = `<${threadRootId('orders', 'kunde "Zoë" 7')}>`;
    expect(text).toContain(`In-Reply-To: ${root}`);
    expect(text).toContain(`References: ${root}`);
    expect(threadRootId('orders', 'other')).not.toBe(threadRootId('orders', 'kunde "Zoë" 7'));
    // Every line ends in CRLF, as RFC 5322 requires: no bare LF anywhere.
    expect(/(^|[^\r])\n/.test(text)).toBe(false);
    expect(text).toMatch(/^X-Mailbus-Priority: high\r$/m);
    expect(text).toMatch(/^Content-Type: application\/json; charset=utf-8\r$/m);
    // The body is plain 7-bit text a person can read in a mail client.
    expect(text).toContain('"note": "caf\\u00e9 \\u2713 \\"quoted\\""');
    expect([...composed.raw].every((byte) => byte < 0x80)).toBe(true);

    const message = await decodeMessage(composed.raw, context);
    expect(message).toMatchObject({
      id: 'order-12345@mailbus',
      topic: 'orders',
      group: 'default',
      attempt: 1,
      key: 'kunde "Zoë" 7',
      priority: 'high',
      contentType: 'application/json',
      payload,
    });
    expect(message.headers['x-tenant']).toBe('acme');
    expect(message.headers['x-mailbus-topic']).toBeUndefined();
    expect(message.subject).toBe(
      '[orders] {"orderId":12345,"note":"café ✓ \\"quoted\\"","items":[1,2.5,…',
    );
  });

  it('generates distinct, time-ordered ids', () => {
    const ids = Array.from({ length: 1000 }, () => newMessageId());
    expect(new Set(ids).size).toBe(1000);
    expect([...ids].sort()).toEqual(ids);
  });

  it('refuses ids, headers and payloads that would break the message', async () => {
    expect(() => normaliseMessageId('a b')).toThrow('not valid');
    expect(() => normaliseMessageId('x>\r\nBcc: y')).toThrow('not valid');
    await expect(
      composeMessage('orders', { payload: 1, headers: { 'Content-Type': 'text/html' } }, options),
    ).rejects.toThrow('set by mailbus itself');
    await expect(
      composeMessage('orders', { payload: 1, headers: { 'X-A': 'one\r\nBcc: evil' } }, options),
    ).rejects.toThrow('line break');
    expect(() => encodePayload(undefined)).toThrow('not JSON-serialisable');
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(() => encodePayload(circular)).toThrow('not JSON-serialisable');
  });

  it('refuses a message over the size limit with ETOOLARGE', async () => {
    const big = { blob: 'x'.repeat(2000) };
    await expect(
      composeMessage('orders', { payload: big }, { ...options, maxMessageBytes: 1000 }),
    ).rejects.toMatchObject({ code: ERROR_CODES.MESSAGE_TOO_LARGE });
  });

  it('keeps long payload lines within mail line limits', async () => {
    const composed = await composeMessage('orders', { payload: { s: 'y'.repeat(5000) } }, options);
    const longest = Math.max(
      ...composed.raw
        .toString('latin1')
        .split('\r\n')
        .map((l) => l.length),
    );
    expect(longest).toBeLessThanOrEqual(998);
    expect((await decodeMessage(composed.raw, context)).payload).toEqual({ s: 'y'.repeat(5000) });
  });
});

describe('decoding mail that is not ours', () => {
  it('takes the text body of a plain email as the payload', async () => {
    const raw = Buffer.from(
      'From: a@example.org\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n' +
        'X-Order: 42\r\n\r\nplain text body\r\n',
    );
    const message = await decodeMessage(raw, context);
    expect(message).toMatchObject({
      id: 'm1@example.org',
      subject: 'hello',
      payload: 'plain text body\n',
      contentType: 'text/plain',
      attempt: 1,
      priority: 'normal',
    });
    expect(message.headers['x-order']).toBe('42');
  });

  it('decodes a non-UTF-8 charset', async () => {
    const body = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // "café" in ISO-8859-1
    const raw = Buffer.concat([
      Buffer.from(
        'Subject: =?ISO-8859-1?Q?caf=E9?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n',
      ),
      body,
    ]);
    const message = await decodeMessage(raw, context);
    expect(message.subject).toBe('café');
    expect((message.payload as string).trimEnd()).toBe('café');
  });

  it('takes the HTML of an HTML-only email, and describes attachments', async () => {
    const raw = Buffer.from(
      [
        'Subject: report',
        'Content-Type: multipart/mixed; boundary="b1"',
        '',
        '--b1',
        'Content-Type: text/html; charset=utf-8',
        '',
        '<p>hi</p>',
        '--b1',
        'Content-Type: application/pdf; name="r.pdf"',
        'Content-Disposition: attachment; filename="r.pdf"',
        'Content-Transfer-Encoding: base64',
        '',
        Buffer.from('%PDF-1.4 fake').toString('base64'),
        '--b1--',
        '',
      ].join('\r\n'),
    );
    const message = await decodeMessage(raw, context);
    expect(message.contentType).toBe('text/html');
    expect((message.payload as string).trimEnd()).toBe('<p>hi</p>');
    expect(message.attachments).toEqual([
      { filename: 'r.pdf', contentType: 'application/pdf', size: 13 },
    ]);
  });

  it('derives a stable id for mail without a Message-ID', async () => {
    const raw = Buffer.from('Subject: no id\r\n\r\nbody\r\n');
    const message = await decodeMessage(raw, context);
    expect(message.id).toBe(derivedMessageId(raw));
    expect(message.id).toMatch(/^[0-9a-f]{32}@derived\.mailbus$/);
  });

  it('refuses a body that claims to be JSON and is not', async () => {
    const raw = Buffer.from('Content-Type: application/json\r\n\r\n{"broken": \r\n');
    await expect(decodeMessage(raw, context)).rejects.toMatchObject({
      code: ERROR_CODES.INVALID_PAYLOAD,
      message: expect.stringContaining('not valid JSON'),
    });
  });
});

describe('rewriting header fields for a redelivery', () => {
  it('replaces the named fields, folded lines included, and keeps the body', async () => {
    const raw = Buffer.from(
      'X-Mailbus-Attempts: 1\r\nX-Mailbus-Last-Error: first\r\n  continued\r\nSubject: s\r\n\r\n{"a":1}\r\n',
    );
    const rewritten = setHeaders(raw, {
      'X-Mailbus-Attempts': '2',
      'X-Mailbus-Last-Error': 'boom: ünïcode\nsecond line',
    });
    const text = rewritten.toString('latin1');
    expect(text.match(/X-Mailbus-Attempts/g)).toHaveLength(1);
    expect(text).not.toContain('continued');
    expect(text.endsWith('Subject: s\r\n\r\n{"a":1}\r\n')).toBe(true);

    const message = await decodeMessage(
      Buffer.concat([Buffer.from('Content-Type: text/plain\r\n'), rewritten]),
      context,
    );
    expect(message.attempt).toBe(3);
    expect(message.lastError).toBe('boom: ünïcode second line');
  });
});

describe('the 7bit fast path of composing', () => {
  // build7bit() must give the bytes nodemailer's streaming build() gives for the same node.
  const variants: Array<{ headers: Record<string, string>; content: string }> = [
    { headers: { Subject: '[orders] {"a":1}' }, content: '{\r\n  "a": 1\r\n}' },
    {
      headers: { Subject: 'café ✓ '.repeat(20), 'X-Mailbus-Key': 'kunde "Zoë" 7' },
      content: '"text"',
    },
    { headers: { 'X-Long': 'word '.repeat(60) }, content: 'ends in a break\r\n' },
    { headers: {}, content: 'ends in a CR\r' },
  ];

  for (const [index, { headers, content }] of variants.entries()) {
    it(`gives the same bytes as build() (variant ${index + 1})`, async () => {
      const make = (): MimeNode => {
        const node = new MimeNode('application/json; charset=utf-8');
        node.setHeader('From', options.from);
        node.setHeader('Message-ID', '<same@mailbus>');
        node.setHeader('Date', 'Thu, 03 Dec 2026 15:00:00 +0000');
        for (const [name, value] of Object.entries(headers)) {
          node.setHeader(name, value);
        }
        node.setHeader('Content-Transfer-Encoding', '7bit');
        node.setContent(content);
        return node;
      };
      const streamed = await make().build();
      expect(build7bit(make(), content).toString('latin1')).toBe(streamed.toString('latin1'));
    });
  }
});
