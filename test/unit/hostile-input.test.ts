// Property-based tests, sized for CI: whatever bytes arrive, the decoder answers with a message
// or with one clear error, and whatever text is offered as a name, the grammar accepts exactly
// the names it documents and names the offending character otherwise.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, MailbusError } from '../../src/errors.js';
import { decodeMessage } from '../../src/message/decode.js';
import { NAME_MAX_LENGTH, checkKey, checkName } from '../../src/names.js';

const context = { topic: 'orders', group: 'default' };

/** Mail-shaped input: header lines, a blank line, a body, with hostile parts mixed in. */
const mailLike = fc
  .tuple(
    fc.array(
      fc.oneof(
        fc.constantFrom(
          'Content-Type: application/json',
          'Content-Type: application/json; charset=x-unknown',
          'Content-Type: multipart/mixed; boundary="b"',
          'Content-Transfer-Encoding: base64',
          'Content-Transfer-Encoding: quoted-printable',
          'Message-ID: <a@b>',
          'X-Mailbus-Attempts: 99999999999999999999',
          'X-Mailbus-Key: =?UTF-8?B?////?=',
          'Subject: =?x-bad?Q?=FF?=',
          '--b',
          '--b--',
        ),
        fc.string({ maxLength: 60 }),
      ),
      { maxLength: 12 },
    ),
    fc.oneof(fc.string({ maxLength: 200 }), fc.constantFrom('{"a":1}', '{', '\u0000\u00ff')),
  )
  .map(([lines, body]) => Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`, 'latin1'));

describe('the decoder, for any input', () => {
  it('resolves with a message or rejects with EINVALIDPAYLOAD, nothing else', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(mailLike, fc.uint8Array({ maxLength: 300 })), async (input) => {
        const raw = Buffer.from(input);
        try {
          const message = await decodeMessage(raw, context);
          expect(message.topic).toBe('orders');
          expect(typeof message.id).toBe('string');
          expect(message.attempt).toBeGreaterThanOrEqual(1);
        } catch (err) {
          expect(err).toBeInstanceOf(MailbusError);
          expect((err as MailbusError).code).toBe(ERROR_CODES.INVALID_PAYLOAD);
          expect((err as Error).message).not.toMatch(/\n/);
        }
      }),
      { numRuns: 400 },
    );
  });
});

const NAME = /^[a-z0-9][a-z0-9_-]*$/;

describe('the name grammar, for any text', () => {
  it('accepts exactly the documented names, and refuses the rest in one line', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 70 }),
          fc.string({ unit: 'grapheme', maxLength: 10 }),
          fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,70}$/),
        ),
        (name) => {
          const valid = NAME.test(name) && name.length <= NAME_MAX_LENGTH && name !== 'inbox';
          if (valid) {
            expect(checkName('group', name)).toBe(name);
            return;
          }
          expect(() => checkName('group', name)).toThrow(MailbusError);
          try {
            checkName('group', name);
          } catch (err) {
            expect((err as MailbusError).code).toBe(ERROR_CODES.INVALID_NAME);
            expect((err as Error).message).not.toMatch(/[\r\n\0]/);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('keeps every path, wildcard and line-breaking character out of names', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 20 }),
        fc.constantFrom('/', '\\', '.', '..', '%', '*', '\r', '\n', '\0', ' ', '~', 'é'),
        fc.string({ maxLength: 20 }),
        (before, bad, after) => {
          expect(() => checkName('topic', `a${before}${bad}${after}`)).toThrow(MailbusError);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('lets keys hold any text without control characters, and no header injection', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 200 }), (key) => {
        // eslint-disable-next-line no-control-regex -- control characters are the subject
        const control = /[\u0000-\u001f\u007f]/.test(key);
        if (control) {
          expect(() => checkKey(key)).toThrow(MailbusError);
        } else {
          expect(checkKey(key)).toBe(key);
        }
      }),
      { numRuns: 500 },
    );
  });
});
