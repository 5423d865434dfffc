// The one place where topic, group and consumer names are checked. Names become mailbox
// names, Maildir directory names and parts of email addresses, so the grammar is the
// intersection of what all three accept unchanged.

import { ERROR_CODES, MailbusError } from './errors.js';

/** Longest topic or group name: keeps the longest mailbox path well under IMAP line limits. */
export const NAME_MAX_LENGTH = 64;

/** Longest ordering key; keys travel in a header, not in a mailbox name. */
export const KEY_MAX_LENGTH = 200;

// Lower case only: email local parts are matched case-insensitively by mail servers, so
// `Orders` and `orders` could not be kept apart on the SMTP path.
const NAME_PATTERN = /^[a-z0-9][a-z0-9_-]*$/;

// INBOX names the account's own inbox on every IMAP server, in any letter case.
const RESERVED_NAMES = new Set(['inbox']);

export type NameKind = 'topic' | 'group';

function describeChar(char: string): string {
  const code = char.codePointAt(0) ?? 0;
  if (code < 0x20 || code === 0x7f) {
    return `control character U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
  }
  return `'${char}'`;
}

/** Throws EINVALIDNAME unless `name` is a valid topic or group name; returns it otherwise. */
export function checkName(kind: NameKind, name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new MailbusError(ERROR_CODES.INVALID_NAME, `${kind} name must be a non-empty string`);
  }
  if (name.length > NAME_MAX_LENGTH) {
    throw new MailbusError(
      ERROR_CODES.INVALID_NAME,
      `${kind} name is ${name.length} characters long; the limit is ${NAME_MAX_LENGTH}`,
    );
  }
  if (!NAME_PATTERN.test(name)) {
    const bad = [...name].find((char, i) =>
      i === 0 ? !/[a-z0-9]/.test(char) : !/[a-z0-9_-]/.test(char),
    );
    const where = bad === name[0] ? 'start with' : 'contain';
    throw new MailbusError(
      ERROR_CODES.INVALID_NAME,
      `${kind} name "${printable(name)}" may not ${where} ${describeChar(bad ?? '')}: ` +
        'use lower-case letters, digits, "-" and "_", starting with a letter or digit',
    );
  }
  if (RESERVED_NAMES.has(name)) {
    throw new MailbusError(ERROR_CODES.INVALID_NAME, `${kind} name "${name}" is reserved`);
  }
  return name;
}

/** Throws EINVALIDNAME unless `key` is a valid ordering key. Keys may hold any printable text. */
export function checkKey(key: unknown): string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new MailbusError(ERROR_CODES.INVALID_NAME, 'key must be a non-empty string');
  }
  if (key.length > KEY_MAX_LENGTH) {
    throw new MailbusError(
      ERROR_CODES.INVALID_NAME,
      `key is ${key.length} characters long; the limit is ${KEY_MAX_LENGTH}`,
    );
  }
  const bad = [...key].find((char) => {
    const code = char.codePointAt(0) ?? 0;
    return code < 0x20 || code === 0x7f;
  });
  if (bad !== undefined) {
    throw new MailbusError(ERROR_CODES.INVALID_NAME, `key may not contain ${describeChar(bad)}`);
  }
  return key;
}

// Keep error messages on one line whatever the caller passed.
function printable(text: string): string {
  const shown = [...text].map((char) => {
    const code = char.codePointAt(0) ?? 0;
    return code < 0x20 || code === 0x7f ? '?' : char;
  });
  return shown.join('').slice(0, NAME_MAX_LENGTH + 8);
}
