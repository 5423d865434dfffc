// Turns an outgoing message into the RFC 5322 text that is stored and sent. The MIME work is
// nodemailer's; this module decides which fields a queue message carries.

import { createHash, randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import MimeNode from 'nodemailer/lib/mime-node';
import { ERROR_CODES, MailbusError, errorText } from '../errors.js';
import { checkKey, checkName } from '../names.js';
import { payloadDigest, signatureValue } from '../security/signature.js';
import type { SigningKey } from '../security/signature.js';
import { HEADER, checkHeader } from './headers.js';
import type { OutgoingMessage, Priority } from './message.js';

/**
 * Default largest message, headers included: 10 MB, just under Postfix's default
 * message_size_limit (10,240,000 bytes), so that what a Maildir accepts can also be mailed.
 */
export const DEFAULT_MAX_MESSAGE_BYTES = 10_000_000;

/** RFC 5322's hard limit on a line, CRLF excluded. */
const MAX_LINE_LENGTH = 998;

/** How many characters of the payload the default Subject shows. */
const SUBJECT_PREVIEW_LENGTH = 60;

const ID_DOMAIN = 'mailbus';
const ID_LOCAL = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$/;
const ID_DOMAIN_PART = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$/;
const ID_MAX_LENGTH = 250;

export interface ComposeOptions {
  /** The From field: who published. */
  from: string;
  maxMessageBytes: number;
  /** Sign the message with this key (X-Mailbus-Signature). */
  signingKey?: SigningKey;
}

/** A message ready to store: its text and the facts a store needs without parsing it again. */
export interface ComposedMessage {
  id: string;
  /** Whether the publisher chose the id: only such ids are checked for duplicates. */
  chosenId: boolean;
  topic: string;
  priority: Priority;
  key?: string;
  raw: Buffer;
}

let idCounter = 0;
const ID_NODE = randomBytes(4).toString('hex');

/** A new message id: time-ordered, unique across processes and machines. */
export function newMessageId(): string {
  idCounter = (idCounter + 1) % 0x1000000;
  const time = Date.now().toString(36).padStart(9, '0');
  const count = idCounter.toString(36).padStart(5, '0');
  return `${time}.${count}.${ID_NODE}@${ID_DOMAIN}`;
}

/**
 * Normalises a caller's message id. An id is the content of a Message-ID: `local@domain`. An id
 * without `@` gets `@mailbus` appended so that it is still a valid Message-ID.
 */
export function normaliseMessageId(id: string): string {
  const full = id.includes('@') ? id : `${id}@${ID_DOMAIN}`;
  const at = full.lastIndexOf('@');
  const local = full.slice(0, at);
  const domain = full.slice(at + 1);
  const valid =
    full.length <= ID_MAX_LENGTH &&
    ID_LOCAL.test(local) &&
    ID_DOMAIN_PART.test(domain) &&
    !local.startsWith('.') &&
    !local.endsWith('.') &&
    !local.includes('..');
  if (!valid) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `message id "${id.replace(/[^\x20-\x7e]/g, '?')}" is not valid: use letters, digits and ` +
        `.-_+=!#$%&'*/?^{|}~, optionally @domain, at most ${ID_MAX_LENGTH} characters`,
    );
  }
  return full;
}

/**
 * The JSON body: pretty-printed, with every non-ASCII character escaped, so that the body is
 * plain 7-bit text that any mail client shows as it is and any JSON parser reads back.
 */
export function encodePayload(payload: unknown): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(payload, null, 2);
  } catch (err) {
    throw new MailbusError(
      ERROR_CODES.INVALID_PAYLOAD,
      `payload is not JSON-serialisable: ${errorText(err)}`,
      { cause: err },
    );
  }
  if (json === undefined) {
    throw new MailbusError(
      ERROR_CODES.INVALID_PAYLOAD,
      `payload of type ${typeof payload} is not JSON-serialisable`,
    );
  }
  return json.replace(/[\u007f-\uffff]/g, (char) => {
    return '\\u' + char.charCodeAt(0).toString(16).padStart(4, '0');
  });
}

function defaultSubject(topic: string, payload: unknown): string {
  // Cut by code points, not UTF-16 units, so that no emoji is split in half.
  const chars = [...JSON.stringify(payload)];
  const preview =
    chars.length > SUBJECT_PREVIEW_LENGTH
      ? chars.slice(0, SUBJECT_PREVIEW_LENGTH - 1).join('') + '…'
      : chars.join('');
  return `[${topic}] ${preview}`;
}

function build(node: MimeNode): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    node.build((err, raw) => (err ? reject(err) : resolve(raw)));
  });
}

/**
 * The message text of a single-part 7bit node, as build() would stream it: nodemailer's header
 * block, a blank line, the content as it is, and a final line break. build() runs a stream
 * pipeline per message, which cost more than the rest of a publish; the bytes are the same.
 */
export function build7bit(node: MimeNode, content: string): Buffer {
  const ending = content.endsWith('\n') ? '' : content.endsWith('\r') ? '\n' : '\r\n';
  return Buffer.from(`${node.buildHeaders()}\r\n\r\n${content}${ending}`, 'utf8');
}

export async function composeMessage(
  topic: string,
  message: OutgoingMessage,
  options: ComposeOptions,
): Promise<ComposedMessage> {
  checkName('topic', topic);
  const key = message.key === undefined ? undefined : checkKey(message.key);
  const priority = message.priority ?? 'normal';
  if (priority !== 'high' && priority !== 'normal') {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `priority must be "high" or "normal", not "${String(priority)}"`,
    );
  }
  const id = message.id === undefined ? newMessageId() : normaliseMessageId(message.id);
  const json = encodePayload(message.payload);

  const node = new MimeNode('application/json; charset=utf-8');
  node.setHeader('From', options.from);
  node.setHeader('Subject', message.subject ?? defaultSubject(topic, message.payload));
  node.setHeader('Message-ID', `<${id}>`);
  node.setHeader(HEADER.topic, topic);
  if (key !== undefined) {
    node.setHeader(HEADER.key, key);
    // Every message of one key replies to the same root, so a mail client shows them as one
    // thread. The root is never sent: its id is derived from the topic and the key.
    const root = `<${threadRootId(topic, key)}>`;
    node.setHeader('In-Reply-To', root);
    node.setHeader('References', root);
  }
  if (priority === 'high') {
    node.setHeader(HEADER.priority, 'high');
  }
  if (options.signingKey !== undefined) {
    const fields = {
      id,
      topic,
      timestamp: Math.floor(Date.now() / 1000),
      // The key as a reader gets it back: decoded and trimmed.
      key: key?.trim() ?? '',
      digest: payloadDigest(json),
    };
    node.setHeader(HEADER.signature, signatureValue(options.signingKey, fields));
  }
  for (const [name, value] of Object.entries(message.headers ?? {})) {
    node.setHeader(...checkHeader(name, value));
  }
  // The JSON is 7-bit already; only a line too long for mail needs quoted-printable. nodemailer
  // would pick base64 for any non-text type, which no person can read in a mail client.
  const longLine = json.split('\n').some((line) => line.length > MAX_LINE_LENGTH);
  node.setHeader('Content-Transfer-Encoding', longLine ? 'quoted-printable' : '7bit');
  // Mail lines end in CRLF (RFC 5322 section 2.3); JSON.stringify's line breaks are bare LFs.
  const content = json.replace(/\n/g, '\r\n');
  node.setContent(content);
  const raw = longLine ? await build(node) : build7bit(node, content);

  if (raw.length > options.maxMessageBytes) {
    throw new MailbusError(
      ERROR_CODES.MESSAGE_TOO_LARGE,
      `message is ${raw.length} bytes; the limit is ${options.maxMessageBytes} ` +
        '(the maxMessageBytes option of connect())',
    );
  }
  return { id, chosenId: message.id !== undefined, topic, priority, key, raw };
}

/** The Message-ID of the thread that the messages of one ordering key form in a topic. */
export function threadRootId(topic: string, key: string): string {
  const digest = createHash('sha256').update(`${topic}\n${key}`).digest('hex').slice(0, 32);
  return `thread.${digest}@mailbus`;
}

/** The default From field: this machine's user-facing name for the publisher. */
export function defaultFrom(): string {
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';
  return `mailbus <mailbus@${host}>`;
}
