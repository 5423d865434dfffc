import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { composeMessage } from '../../src/message/compose.js';
import { setHeaders } from '../../src/message/rewrite.js';
import {
  canonicalForm,
  parseKey,
  parseKeyList,
  parseSignatureValue,
  payloadDigest,
  signatureMatches,
  signatureValue,
} from '../../src/security/signature.js';
import type { SigningKey } from '../../src/security/signature.js';
import { Verifier } from '../../src/security/verify.js';

const KEY: SigningKey = { id: 'k2026', secret: Buffer.from('0123456789abcdef0123456789abcdef') };
const OLD_KEY: SigningKey = {
  id: 'k2025',
  secret: Buffer.from('fedcba9876543210fedcba9876543210'),
};
const STRANGER: SigningKey = {
  id: 'k2026',
  secret: Buffer.from('not the real secret, not at all'),
};

/** The same test vector as docs/format.md, "Signed messages". */
describe('the signature test vector', () => {
  const body = '{\n  "orderId": 1042,\n  "total": 19.5\n}';
  const fields = {
    id: 'order-1042@example.org',
    topic: 'orders',
    timestamp: 1796299125,
    key: 'customer-7',
    digest: payloadDigest(body),
  };

  it('digests the body the same with LF or CR LF line ends and a final line break', () => {
    expect(fields.digest).toBe('bba78a5100e890237580317047742d40ebcd60b934f557e7ad0cb145a86674e3');
    expect(payloadDigest(body.replace(/\n/g, '\r\n') + '\r\n')).toBe(fields.digest);
  });

  it('signs the documented canonical form', () => {
    expect(canonicalForm(fields)).toBe(
      'mailbus-signature-v1\norder-1042@example.org\norders\n1796299125\ncustomer-7\n' +
        'bba78a5100e890237580317047742d40ebcd60b934f557e7ad0cb145a86674e3',
    );
    expect(signatureValue(KEY, fields)).toBe(
      'v=1; k=k2026; t=1796299125; ' +
        's=6bccefc116a51e8b438c6e39bd7bd9c40fbaf440e25297ee98fe930b32806785',
    );
  });
});

describe('signing keys', () => {
  it('reads id:secret and refuses short secrets and bad ids without printing the secret', () => {
    expect(parseKey('k1:0123456789abcdef', 'MAILBUS_SIGNING_KEY')).toEqual({
      id: 'k1',
      secret: Buffer.from('0123456789abcdef'),
    });
    expect(() => parseKey('k1:tooshort-secret'.slice(0, 12), 'X')).toThrow(
      'X: the secret of key k1 is 9 bytes; at least 16 are needed',
    );
    expect(() => parseKey('no-colon-here-at-all', 'X')).toThrow('X must be KEY-ID:SECRET');
    expect(() => parseKey('bad id:0123456789abcdef', 'X')).toThrow('key id "bad id" is not valid');
    expect(() => parseKeyList('a:0123456789abcdef,a:0123456789abcdeg', 'X')).toThrow(
      'X names key a twice',
    );
    expect(parseKeyList('a:0123456789abcdef\n# old\nb:0123456789abcdeg\n', 'X')).toHaveLength(2);
  });
});

const TOPIC = 'orders';

async function signed(payload: unknown, key = KEY, options: { id?: string } = {}) {
  const message = await composeMessage(
    TOPIC,
    { payload, key: 'customer-7', ...options },
    { from: 'shop <shop@example.org>', maxMessageBytes: 1 << 20, signingKey: key },
  );
  return message.raw;
}

function verifier(options: { now?: () => number; keys?: SigningKey[] } = {}) {
  const accepted = new Set<string>();
  return new Verifier({
    topic: TOPIC,
    group: 'billing',
    keys: options.keys ?? [KEY, OLD_KEY],
    windowMs: 300_000,
    replayGuard: async (id) => {
      const seen = accepted.has(id);
      accepted.add(id);
      return seen;
    },
    now: options.now,
  });
}

describe('the verifier', () => {
  it('passes a signed message, and one signed with an older key still in the list', async () => {
    const check = verifier();
    expect(await check.check(await signed({ n: 1 }))).toBeUndefined();
    expect(await check.check(await signed({ n: 2 }, OLD_KEY))).toBeUndefined();
  });

  it('names the reason for each message it refuses', async () => {
    const check = verifier({ keys: [KEY] });
    const unsigned = (
      await composeMessage(TOPIC, { payload: 1 }, { from: 'x <x@x>', maxMessageBytes: 1 << 20 })
    ).raw;
    expect(await check.check(unsigned)).toMatchObject({ reason: 'unsigned' });
    expect(await check.check(await signed(1, OLD_KEY))).toEqual({
      reason: 'unknown-key',
      detail: 'no verification key k2025',
    });
    expect(await check.check(await signed(1, STRANGER))).toMatchObject({
      reason: 'bad-signature',
      detail: 'the signature of key k2026 does not match the message',
    });

    const raw = (await signed({ amount: 10 })).toString('latin1');
    const tampered = Buffer.from(raw.replace('"amount": 10', '"amount": 99'), 'latin1');
    expect(await check.check(tampered)).toMatchObject({ reason: 'bad-signature' });
    const rekeyed = Buffer.from(raw.replace('customer-7', 'customer-8'), 'latin1');
    expect(await check.check(rekeyed)).toMatchObject({ reason: 'bad-signature' });
    const garbled = setHeaders(await signed(1), { 'X-Mailbus-Signature': 'v=1; k=k2026' });
    expect(await check.check(garbled)).toMatchObject({ reason: 'bad-signature' });
  });

  it('refuses a signature older or further ahead than the window', async () => {
    const raw = await signed({ n: 1 });
    const later = verifier({ now: () => Date.now() + 301_000 });
    expect(await later.check(raw)).toMatchObject({ reason: 'stale', detail: /^signed 30\d s old/ });
    const earlier = verifier({ now: () => Date.now() - 400_000 });
    expect(await earlier.check(raw)).toMatchObject({ reason: 'stale', detail: /in the future/ });
  });

  it('refuses an id it accepted before, and a signature moved to another topic', async () => {
    const check = verifier();
    const raw = await signed({ n: 1 }, KEY, { id: 'order-7' });
    expect(await check.check(raw)).toBeUndefined();
    expect(await check.check(raw)).toEqual({
      reason: 'replayed',
      detail: 'id order-7@mailbus was already accepted within 300 s',
    });
    const elsewhere = new Verifier({
      topic: 'refunds',
      group: 'billing',
      keys: [KEY],
      windowMs: 300_000,
      replayGuard: async () => false,
    });
    expect(await elsewhere.check(await signed(1))).toMatchObject({ reason: 'bad-signature' });
  });

  it('accepts a sealed copy again after the window, and no seal a stranger made', async () => {
    const check = verifier();
    const raw = await signed({ n: 1 });
    expect(await check.check(raw)).toBeUndefined();
    const retry = check.seal(setHeaders(raw, { 'X-Mailbus-Attempts': '1' }));
    const muchLater = verifier({ now: () => Date.now() + 3_600_000 });
    expect(await muchLater.check(retry)).toBeUndefined();

    const forgedSeal = verifier({ keys: [STRANGER] }).seal(raw);
    expect(await muchLater.check(forgedSeal)).toMatchObject({ reason: 'stale' });
    const body = forgedSeal.toString('latin1').replace('"n": 1', '"n": 2');
    expect(await muchLater.check(Buffer.alloc(0))).toMatchObject({
      reason: 'unsigned',
    });
    expect(await muchLater.check(Buffer.from(body, 'latin1'))).toMatchObject({
      reason: 'bad-signature',
    });
  });
});

describe('the canonicaliser, for any input', () => {
  const text = fc.string({ unit: 'grapheme', maxLength: 40 });

  it('changes the signature when any one field changes', () => {
    fc.assert(
      fc.property(
        fc.record({
          id: text,
          topic: text,
          timestamp: fc.integer({ min: 0, max: 10 ** 12 - 2 }),
          key: text,
          digest: fc.stringMatching(/^[0-9a-f]{64}$/),
        }),
        fc.constantFrom('id', 'topic', 'key', 'digest', 'timestamp'),
        (fields, changed) => {
          const other =
            changed === 'timestamp'
              ? { ...fields, timestamp: fields.timestamp + 1 }
              : { ...fields, [changed]: `${fields[changed]}x` };
          const value = parseSignatureValue(signatureValue(KEY, fields));
          expect(value).toBeDefined();
          expect(signatureMatches(KEY, fields, value?.signature as string)).toBe(true);
          expect(signatureMatches(KEY, other, value?.signature as string)).toBe(false);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('digests the same for CR LF and LF bodies, and never throws on any bytes', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), fc.uint8Array({ maxLength: 200 }), (s, bytes) => {
        expect(payloadDigest(s.replace(/\r?\n/g, '\r\n'))).toBe(
          payloadDigest(s.replace(/\r?\n/g, '\n')),
        );
        expect(payloadDigest(Buffer.from(bytes))).toMatch(/^[0-9a-f]{64}$/);
      }),
      { numRuns: 300 },
    );
  });

  it('reads back no signature value but one it could have written', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 120 }), (value) => {
        const parsed = parseSignatureValue(value);
        if (parsed !== undefined) {
          expect(parsed.signature).toMatch(/^[0-9a-f]{64}$/);
          expect(Number.isSafeInteger(parsed.timestamp)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});
