// Turns stored RFC 5322 text into the Message a handler receives. Mail of our own carries a JSON
// body; any other mail (a plain text email from a script, HTML from a mail client) is decoded too,
// its text becoming the payload, so that anything that can send mail can publish.

import { createHash } from 'node:crypto';
import PostalMime, { decodeWords } from 'postal-mime';
import { ERROR_CODES, MailbusError, errorText } from '../errors.js';
import { BODY_HEADERS, HEADER, OWN_HEADERS } from './headers.js';
import { headerEnd } from './rewrite.js';
import { oneLine } from '../text.js';
import type { AttachmentInfo, Message } from './message.js';

/** The most MIME nesting a message may have; deeper mail is refused, not parsed. */
export const MAX_MIME_DEPTH = 32;

/** The most header bytes, across all parts, that a message may have. */
export const MAX_HEADER_BYTES = 1024 * 1024;

/** The most header fields the top of a message may have: ordinary mail has a few dozen. */
export const MAX_HEADER_FIELDS = 1000;

/** Where the message was found: the store knows these better than the message does. */
export interface DeliveryContext {
  topic: string;
  group: string;
}

/** The domain of ids that mailbus derives for mail that came without a Message-ID. */
export const DERIVED_ID_DOMAIN = 'derived.mailbus';

/** A stable id for a message that has no Message-ID: a digest of its text. */
export function derivedMessageId(raw: Buffer): string {
  const digest = createHash('sha256').update(raw).digest('hex').slice(0, 32);
  return `${digest}@${DERIVED_ID_DOMAIN}`;
}

/** Refuses, before parsing, mail that is empty or has more header fields than the limit. */
function checkShape(raw: Buffer): void {
  if (raw.length === 0 || (raw.length < 4096 && raw.toString('latin1').trim() === '')) {
    throw new MailbusError(
      ERROR_CODES.INVALID_PAYLOAD,
      `the message is empty (${raw.length} bytes)`,
    );
  }
  // Mail begins with a header field; bytes that do not (a file of garbage dropped in new/)
  // are not mail, whatever a lenient parser would make of them.
  const firstLine = raw.subarray(0, Math.min(raw.length, 1000)).toString('latin1');
  if (!/^[\x21-\x39\x3b-\x7e]+[ \t]*:/.test(firstLine)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_PAYLOAD,
      'the message does not begin with a header field',
    );
  }
  const { end } = headerEnd(raw);
  let fields = 0;
  let lineStart = 0;
  while (lineStart < end) {
    // A line that starts with white space continues the field above it.
    if (raw[lineStart] !== 0x20 && raw[lineStart] !== 0x09) {
      fields += 1;
    }
    if (fields > MAX_HEADER_FIELDS) {
      throw new MailbusError(
        ERROR_CODES.INVALID_PAYLOAD,
        `the message has more than ${MAX_HEADER_FIELDS} header fields`,
      );
    }
    const lineEnd = raw.indexOf(0x0a, lineStart);
    if (lineEnd === -1) {
      break;
    }
    lineStart = lineEnd + 1;
  }
}

function stripAngles(value: string): string {
  const trimmed = value.trim();
  return trimmed.startsWith('<') && trimmed.endsWith('>') ? trimmed.slice(1, -1) : trimmed;
}

function parseAttempts(value: string | undefined): number {
  const attempts = Number.parseInt(value ?? '', 10);
  return Number.isSafeInteger(attempts) && attempts > 0 ? attempts : 0;
}

function bodyText(content: ArrayBuffer | Uint8Array | string, charset: string): string {
  if (typeof content === 'string') {
    return content;
  }
  const bytes = content instanceof Uint8Array ? content : new Uint8Array(content);
  try {
    return new TextDecoder(charset, { fatal: true }).decode(bytes);
  } catch (err) {
    throw new MailbusError(
      ERROR_CODES.INVALID_PAYLOAD,
      `JSON body is not valid ${oneLine(charset)}: ${oneLine(errorText(err))}`,
      { cause: err },
    );
  }
}

/** A header value with RFC 2047 encoded words decoded, or undefined when empty. */
function decodedField(value: string | undefined): string | undefined {
  const decoded = value === undefined ? '' : decodeWords(value).trim();
  return decoded === '' ? undefined : decoded;
}

/**
 * A text body as the parser decoded it, refused when the decoding had to replace bytes (invalid
 * UTF-8, bytes a charset does not have): the handler would get text the sender never wrote. A
 * sender who means U+FFFD itself sends it in a JSON body.
 */
function checkedText(text: string): string {
  if (text.includes('\uFFFD')) {
    throw new MailbusError(
      ERROR_CODES.INVALID_PAYLOAD,
      'the text body has bytes that are not valid in its charset (decoded to U+FFFD)',
    );
  }
  return text;
}

function charsetOf(contentType: string): string {
  const match = /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(contentType);
  return match?.[1] ?? 'utf-8';
}

/**
 * Decodes a stored message. Throws EINVALIDPAYLOAD when the message says its body is JSON and
 * it is not, and when the MIME structure is past the limits above: such a message cannot be
 * handled, and the caller dead-letters it with the error as the reason.
 */
export async function decodeMessage(raw: Buffer, context: DeliveryContext): Promise<Message> {
  checkShape(raw);
  let email;
  try {
    email = await PostalMime.parse(raw, {
      maxNestingDepth: MAX_MIME_DEPTH,
      maxHeadersSize: MAX_HEADER_BYTES,
    });
  } catch (err) {
    throw new MailbusError(
      ERROR_CODES.INVALID_PAYLOAD,
      `message cannot be parsed as MIME: ${oneLine(errorText(err))}`,
      { cause: err },
    );
  }

  const first = new Map<string, string>();
  for (const header of email.headers) {
    if (!first.has(header.key)) {
      first.set(header.key, header.value);
    }
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of first) {
    if (!OWN_HEADERS.has(name) && !BODY_HEADERS.has(name)) {
      headers[name] = decodeWords(value);
    }
  }

  const contentType = (first.get('content-type') ?? 'text/plain').toLowerCase();
  const mediaType = contentType.split(';')[0]?.trim() || 'text/plain';
  let payload: unknown;
  let payloadType = mediaType;
  const attachments: AttachmentInfo[] = [];

  if (mediaType === 'application/json') {
    const part = email.attachments[0];
    const json = part ? bodyText(part.content, charsetOf(contentType)) : '';
    try {
      payload = JSON.parse(json);
    } catch (err) {
      throw new MailbusError(
        ERROR_CODES.INVALID_PAYLOAD,
        `body is declared application/json but is not valid JSON: ${oneLine(errorText(err))}`,
        { cause: err },
      );
    }
  } else {
    for (const part of email.attachments) {
      const size =
        typeof part.content === 'string'
          ? Buffer.byteLength(part.content)
          : part.content.byteLength;
      attachments.push({
        filename: part.filename ?? undefined,
        contentType: part.mimeType,
        size,
      });
    }
    if (email.text !== undefined) {
      payload = checkedText(email.text);
      payloadType = 'text/plain';
    } else if (email.html !== undefined) {
      payload = checkedText(email.html);
      payloadType = 'text/html';
    } else {
      payload = null;
    }
  }

  const messageId = first.get('message-id');
  const priority = first.get(HEADER.priority.toLowerCase())?.trim().toLowerCase();
  const flaggedHigh = priority === 'high' || first.get('x-priority')?.trim().startsWith('1');
  const lastError = first.get(HEADER.lastError.toLowerCase());
  const date = email.date ? new Date(email.date) : undefined;

  return {
    id: messageId ? stripAngles(messageId) : derivedMessageId(raw),
    topic: context.topic,
    group: context.group,
    attempt: parseAttempts(first.get(HEADER.attempts.toLowerCase())) + 1,
    key: decodedField(first.get(HEADER.key.toLowerCase())),
    priority: flaggedHigh ? 'high' : 'normal',
    subject: email.subject ?? '',
    date: date && !Number.isNaN(date.getTime()) ? date : undefined,
    headers,
    payload,
    contentType: payloadType,
    attachments,
    lastError: decodedField(lastError),
  };
}
