// The header fields of our own that carry queue metadata, and the rules for the header fields
// a publisher may add. docs/format.md describes the same fields for other languages.

import { ERROR_CODES, MailbusError } from '../errors.js';

export const HEADER = {
  topic: 'X-Mailbus-Topic',
  key: 'X-Mailbus-Key',
  /** How many attempts at handling were already made (and failed or timed out). */
  attempts: 'X-Mailbus-Attempts',
  lastError: 'X-Mailbus-Last-Error',
  priority: 'X-Mailbus-Priority',
  /** A publisher's HMAC signature (security/signature.ts). */
  signature: 'X-Mailbus-Signature',
  /** A consumer's or operator's seal on a copy of an accepted or released message. */
  seal: 'X-Mailbus-Seal',
  quarantineReason: 'X-Mailbus-Quarantine-Reason',
  quarantinedAt: 'X-Mailbus-Quarantined-At',
} as const;

/** Our header fields in lower case, as parsers report them. */
export const OWN_HEADERS: ReadonlySet<string> = new Set(
  Object.values(HEADER).map((name) => name.toLowerCase()),
);

// Fields that the composer owns: a publisher setting one would break the message's structure
// or identity. X-Mailbus-* fields are set through typed options, never as free headers.
const COMPOSER_HEADERS = new Set([
  'message-id',
  'date',
  'from',
  'sender',
  'to',
  'cc',
  'bcc',
  'subject',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
  'content-disposition',
  'in-reply-to',
  'references',
  'received',
  'return-path',
]);

// Headers that describe the transfer of the body rather than the message; they are left out of
// a delivered message's `headers` because the decoded payload has already used them.
export const BODY_HEADERS: ReadonlySet<string> = new Set([
  'mime-version',
  'content-type',
  'content-transfer-encoding',
]);

/** Longest value of one publisher header, before folding. */
export const HEADER_VALUE_MAX_LENGTH = 998;

const FIELD_NAME = /^[A-Za-z0-9][A-Za-z0-9-]{0,75}$/;

/** Checks a publisher's extra header and returns its name and value unchanged. */
export function checkHeader(name: string, value: string): [string, string] {
  if (!FIELD_NAME.test(name)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_NAME,
      `header name "${name.replace(/[^\x20-\x7e]/g, '?')}" is not valid: ` +
        'use letters, digits and "-", starting with a letter or digit, at most 76 characters',
    );
  }
  const lower = name.toLowerCase();
  if (COMPOSER_HEADERS.has(lower) || lower.startsWith('x-mailbus-')) {
    throw new MailbusError(
      ERROR_CODES.INVALID_NAME,
      `header "${name}" is set by mailbus itself and cannot be given as an extra header`,
    );
  }
  if (/[\r\n\0]/.test(value)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_NAME,
      `header "${name}" has a line break or NUL in its value`,
    );
  }
  if (value.length > HEADER_VALUE_MAX_LENGTH) {
    throw new MailbusError(
      ERROR_CODES.INVALID_NAME,
      `header "${name}" is ${value.length} characters long; the limit is ${HEADER_VALUE_MAX_LENGTH}`,
    );
  }
  return [name, value];
}
