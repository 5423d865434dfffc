// Signed messages: a publisher holding a shared key signs each message with HMAC-SHA256, and a
// verifying consumer hands its handler only messages whose signature checks out. A From field
// proves nothing in mail; a signature made with a key only trusted publishers hold does.
//
// The signature is one header field of ours, over a canonical form of the facts a handler
// trusts (docs/format.md, "Signed messages", specifies it for other languages):
//
//   X-Mailbus-Signature: v=1; k=KEY-ID; t=UNIX-SECONDS; s=HEX-HMAC
//
//   canonical = "mailbus-signature-v1" LF id LF topic LF timestamp LF key LF payload-digest
//
// A consumer that puts a verified message back for another attempt, or an operator who releases
// one from quarantine, seals the copy with a verification key (X-Mailbus-Seal), so that the copy
// is not refused later as stale or replayed.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, MailbusError, errorText } from '../errors.js';
import { HEADER } from '../message/headers.js';

export const SIGNATURE_HEADER = HEADER.signature;
export const SEAL_HEADER = HEADER.seal;

const SIGNATURE_CONTEXT = 'mailbus-signature-v1';
const SEAL_CONTEXT = 'mailbus-seal-v1';

/** A key id: short, and free of the characters that separate keys in a list. */
const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** Shortest secret accepted: 16 bytes, 128 bits, as much as a random UUID holds. */
export const MIN_SECRET_BYTES = 16;

/** Default allowed distance between a signature's time and the verifier's clock: 5 minutes. */
export const DEFAULT_SIGNATURE_WINDOW_MS = 5 * 60_000;

export interface SigningKey {
  id: string;
  secret: Buffer;
}

/** The facts a signature covers. */
export interface SignedFields {
  /** The message id: the Message-ID without angle brackets. */
  id: string;
  topic: string;
  /** Seconds since 1970-01-01T00:00:00Z. */
  timestamp: number;
  /** The ordering key, or '' when there is none. */
  key: string;
  /** payloadDigest() of the body. */
  digest: string;
}

function invalid(message: string): MailbusError {
  return new MailbusError(ERROR_CODES.INVALID_OPTION, message);
}

/** Reads one key, `id:secret`; `source` names where it came from, never the secret. */
export function parseKey(text: string, source: string): SigningKey {
  const colon = text.indexOf(':');
  const id = colon === -1 ? '' : text.slice(0, colon).trim();
  const secret = colon === -1 ? '' : text.slice(colon + 1).trim();
  if (colon === -1) {
    throw invalid(`${source} must be KEY-ID:SECRET, and has no ":"`);
  }
  if (!KEY_ID.test(id)) {
    throw invalid(
      `${source}: key id "${id.replace(/[^\x20-\x7e]/g, '?').slice(0, 70)}" is not valid: ` +
        'use 1 to 64 letters, digits, ".", "_" and "-"',
    );
  }
  const bytes = Buffer.from(secret, 'utf8');
  if (bytes.length < MIN_SECRET_BYTES) {
    throw invalid(
      `${source}: the secret of key ${id} is ${bytes.length} bytes; at least ` +
        `${MIN_SECRET_BYTES} are needed (openssl rand -hex 32 makes a good one)`,
    );
  }
  return { id, secret: bytes };
}

/** Reads a list of keys separated by commas or line breaks; blank entries are ignored. */
export function parseKeyList(text: string, source: string): SigningKey[] {
  const keys = text
    .split(/[,\r\n]+/)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '' && !entry.startsWith('#'))
    .map((entry) => parseKey(entry, source));
  const ids = new Set<string>();
  for (const key of keys) {
    if (ids.has(key.id)) {
      throw invalid(`${source} names key ${key.id} twice`);
    }
    ids.add(key.id);
  }
  return keys;
}

/** Reads a key file; the error names the file, never its content. */
export function readKeyFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw invalid(`cannot read the key file ${path}: ${errorText(err)}`);
  }
}

/**
 * The digest of a body: SHA-256, lower-case hex, of the body after its content transfer encoding
 * is undone, with every CR LF turned into LF and the line breaks at its end removed. Mail
 * servers change line endings and add a final line break; they change nothing a JSON parser
 * sees, and neither does this.
 */
export function payloadDigest(body: Buffer | string): string {
  const text = Buffer.isBuffer(body) ? body.toString('latin1') : body;
  const normalised = text.replace(/\r\n/g, '\n').replace(/[\r\n]+$/, '');
  return createHash('sha256').update(Buffer.from(normalised, 'latin1')).digest('hex');
}

/** The exact bytes a signature is computed over (UTF-8). */
export function canonicalForm(fields: SignedFields): string {
  const { id, topic, timestamp, key, digest } = fields;
  return [SIGNATURE_CONTEXT, id, topic, String(timestamp), key, digest].join('\n');
}

function hmac(secret: Buffer, text: string): string {
  return createHmac('sha256', secret).update(text, 'utf8').digest('hex');
}

/** The value of the X-Mailbus-Signature field for these facts. */
export function signatureValue(key: SigningKey, fields: SignedFields): string {
  return `v=1; k=${key.id}; t=${fields.timestamp}; s=${hmac(key.secret, canonicalForm(fields))}`;
}

export interface ParsedSignature {
  keyId: string;
  timestamp: number;
  signature: string;
}

/** Reads a signature field; undefined when it is not one this version can check. */
export function parseSignatureValue(value: string): ParsedSignature | undefined {
  const params = parseParams(value);
  const timestamp = Number(params.get('t'));
  const keyId = params.get('k') ?? '';
  const signature = params.get('s') ?? '';
  if (params.get('v') !== '1' || !KEY_ID.test(keyId) || !/^[0-9a-f]{64}$/.test(signature)) {
    return undefined;
  }
  if (!/^\d{1,12}$/.test(params.get('t') ?? '') || !Number.isSafeInteger(timestamp)) {
    return undefined;
  }
  return { keyId, timestamp, signature };
}

/** Whether `signature` is the HMAC of `fields` under `key`, compared in constant time. */
export function signatureMatches(key: SigningKey, fields: SignedFields, signature: string) {
  return sameHex(hmac(key.secret, canonicalForm(fields)), signature);
}

/** The facts a seal covers: where the copy may be handled, and its unchanged body. */
export interface SealedFields {
  /** The Message-ID field as it is (trimmed), or '' when the message has none. */
  messageId: string;
  topic: string;
  group: string;
  /** SHA-256 hex of the body bytes after the header, as stored. */
  bodyDigest: string;
}

function sealForm(fields: SealedFields): string {
  return [SEAL_CONTEXT, fields.messageId, fields.topic, fields.group, fields.bodyDigest].join('\n');
}

export function sealValue(key: SigningKey, fields: SealedFields): string {
  return `v=1; k=${key.id}; s=${hmac(key.secret, sealForm(fields))}`;
}

/** Whether a seal field was made with one of `keys` over `fields`. */
export function sealMatches(keys: SigningKey[], value: string, fields: SealedFields): boolean {
  const params = parseParams(value);
  const key = keys.find((candidate) => candidate.id === params.get('k'));
  const seal = params.get('s') ?? '';
  if (params.get('v') !== '1' || key === undefined || !/^[0-9a-f]{64}$/.test(seal)) {
    return false;
  }
  return sameHex(hmac(key.secret, sealForm(fields)), seal);
}

function sameHex(expected: string, given: string): boolean {
  const a = Buffer.from(expected, 'hex');
  const b = Buffer.from(given, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

function parseParams(value: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const part of value.split(';')) {
    const eq = part.indexOf('=');
    const name = part.slice(0, eq).trim().toLowerCase();
    if (eq > 0 && !params.has(name)) {
      params.set(name, part.slice(eq + 1).trim());
    }
  }
  return params;
}
