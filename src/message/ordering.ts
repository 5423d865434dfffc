// What the per-key ordering of a group needs to know of a message, read from its header alone:
// its ordering key (the X-Mailbus-Key field) and its Message-ID, which names it through
// retries, since every rewritten copy keeps it.

import { createHash } from 'node:crypto';
import { decodeWords } from 'postal-mime';
import { HEADER } from './headers.js';

export interface Ordering {
  key: string;
  /** The Message-ID without angle brackets. */
  messageId: string;
}

/** A short digest of an ordering key, safe in a file name, a mailbox or a header. */
export function keyDigest(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 16);
}

/**
 * The ordering key and Message-ID of a message, from its text or its header block alone.
 * Undefined for a message without a key, and for one without a Message-ID: nothing could name
 * it across retries, so it is handed out unordered.
 */
export function orderingOf(text: Buffer): Ordering | undefined {
  const fields = headerFields(text);
  const key = keyIn(fields);
  const messageId = /<([^>]+)>/.exec(fields.get('message-id') ?? '')?.[1];
  if (key === undefined || messageId === undefined) {
    return undefined;
  }
  return { key, messageId };
}

/** The ordering key of a message, from its text or its header block alone. */
export function orderingKeyOf(text: Buffer): string | undefined {
  return keyIn(headerFields(text));
}

function keyIn(fields: Map<string, string>): string | undefined {
  const raw = fields.get(HEADER.key.toLowerCase());
  const key = raw === undefined ? '' : decodeWords(utf8(raw)).trim();
  return key === '' ? undefined : key;
}

/** The first occurrence of each field of the header block, unfolded, by lower-case name. */
function headerFields(text: Buffer): Map<string, string> {
  const end = text.indexOf('\r\n\r\n');
  const block = text.toString('latin1', 0, end === -1 ? text.length : end);
  const fields = new Map<string, string>();
  for (const line of block.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).trim().toLowerCase();
    if (colon > 0 && !fields.has(name)) {
      fields.set(name, line.slice(colon + 1).trim());
    }
  }
  return fields;
}

/** Header text was read as latin1 to keep its bytes; raw UTF-8 in it is decoded here. */
function utf8(text: string): string {
  return /[\u0080-\u00ff]/.test(text) ? Buffer.from(text, 'latin1').toString('utf8') : text;
}
