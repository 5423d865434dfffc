// Dead letters as a person reads them: a delivery status notification (RFC 3464), the shape a
// mail server uses to say it could not deliver a message. Its first part says in words what
// failed, the second the same in fields a program reads, the third is the original message,
// intact, from which a replay restores it.

import { hostname } from 'node:os';
import MimeNode from 'nodemailer/lib/mime-node';
import PostalMime, { decodeWords } from 'postal-mime';
import { ERROR_CODES, MailbusError } from '../errors.js';
import { newMessageId } from '../message/compose.js';
import { HEADER } from '../message/headers.js';
import type { Message } from '../message/message.js';
import { setHeaders } from '../message/rewrite.js';
import { oneLine } from '../text.js';

/** Our header naming the id of the message a report is about. */
export const ORIGINAL_ID_HEADER = 'X-Mailbus-Original-Id';

const REPORTER = hostname().replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';

export interface FailureReport {
  topic: string;
  group: string;
  consumer: string;
  /** What the handler was given, when the message could be decoded at all. */
  message?: Message;
  /** The id of the failed message, decoded or derived. */
  id: string;
  attempts: number;
  error: string;
  /** The message exactly as it was stored before this attempt. */
  original: Buffer;
}

function build(node: MimeNode): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    node.build((err, raw) => (err ? reject(err) : resolve(raw)));
  });
}

function explanation(report: FailureReport, failedAt: Date): string {
  const { topic, group, consumer, attempts, error, message } = report;
  return [
    `mailbus could not handle a message of topic "${topic}" in group "${group}".`,
    '',
    `  Message:    ${report.id}`,
    `  Subject:    ${oneLine(message?.subject ?? '(not decoded)')}`,
    `  Attempts:   ${attempts}`,
    `  Last error: ${oneLine(error)}`,
    `  Consumer:   ${consumer}`,
    `  Failed at:  ${failedAt.toISOString()}`,
    '',
    'The original message is attached, unchanged. To hand it to the group again:',
    `  mailbus dlq ${topic} --group ${group} replay ${report.id}`,
    '',
  ].join('\r\n');
}

function deliveryStatus(report: FailureReport, failedAt: Date): string {
  // One line per field, 7-bit: the error on one line, other characters as '?' (the text part and
  // the X-Mailbus-Last-Error field carry it in full).
  const diagnostic = oneLine(report.error)
    .replace(/[^\x20-\x7e]/g, '?')
    .slice(0, 900);
  return [
    `Reporting-MTA: dns; ${REPORTER}`,
    '',
    `Final-Recipient: x-mailbus; ${report.topic}/${report.group}`,
    'Action: failed',
    'Status: 5.0.0',
    `Diagnostic-Code: x-mailbus; ${diagnostic}`,
    `Last-Attempt-Date: ${failedAt.toUTCString().replace('GMT', '+0000')}`,
    '',
  ].join('\r\n');
}

/** Composes the dead letter for a message that failed for good. */
export async function composeDeadLetter(report: FailureReport): Promise<Buffer> {
  const failedAt = new Date();
  const subject = report.message?.subject || report.id;

  const root = new MimeNode('multipart/report; report-type=delivery-status');
  root.setHeader('From', `mailbus <mailbus@${REPORTER}>`);
  root.setHeader('Subject', `Undeliverable: ${subject}`);
  root.setHeader('Message-ID', `<${newMessageId()}>`);
  root.setHeader('Auto-Submitted', 'auto-generated');
  root.setHeader(HEADER.topic, report.topic);
  root.setHeader(ORIGINAL_ID_HEADER, report.id);
  // The original's ordering key, on the report itself: a search by key finds the dead letter
  // (the original inside is an attachment, which no header search reads), and the report
  // stands in its key's thread.
  if (report.message?.key !== undefined) {
    root.setHeader(HEADER.key, report.message.key);
  }
  root.setHeader(HEADER.attempts, String(report.attempts));
  root.setHeader(HEADER.lastError, report.error.replace(/[\r\n\t]+/g, ' ').slice(0, 1000));

  root.createChild('text/plain; charset=utf-8').setContent(explanation(report, failedAt));
  root.createChild('message/delivery-status').setContent(deliveryStatus(report, failedAt));
  root.createChild('message/rfc822').setContent(report.original);
  return build(root);
}

/** What an operator is shown of a dead letter. */
export interface DeadLetterInfo {
  id: string;
  subject: string;
  attempts: number;
  lastError: string;
  failedAt?: Date;
  /** The original message, as it was stored before its last attempt. */
  original: Buffer;
}

/**
 * Reads a dead letter back. Mail that landed in the dead-letter mailbox without being a report
 * of ours (moved there by hand) is its own original.
 */
export async function readDeadLetter(raw: Buffer): Promise<DeadLetterInfo> {
  const email = await PostalMime.parse(raw, { forceRfc822Attachments: true });
  const header = (name: string): string | undefined =>
    email.headers.find((h) => h.key === name.toLowerCase())?.value.trim();

  const attached = email.attachments.find((part) => part.mimeType === 'message/rfc822');
  const boundary = /boundary="?([^";\s]+)"?/i.exec(header('content-type') ?? '')?.[1];
  const original =
    attached === undefined
      ? raw
      : (lastPartBody(raw, boundary) ??
        (typeof attached.content === 'string'
          ? Buffer.from(attached.content)
          : Buffer.from(attached.content as ArrayBuffer)));
  const id = header(ORIGINAL_ID_HEADER) ?? header('message-id')?.replace(/^<|>$/g, '');
  if (!id) {
    throw new MailbusError(ERROR_CODES.INVALID_PAYLOAD, 'dead letter names no message id');
  }
  const date = email.date ? new Date(email.date) : undefined;
  return {
    id,
    subject: (email.subject ?? '').replace(/^Undeliverable: /, ''),
    attempts: Number.parseInt(header(HEADER.attempts) ?? '0', 10) || 0,
    lastError: decodeWords(header(HEADER.lastError) ?? ''),
    failedAt: date && !Number.isNaN(date.getTime()) ? date : undefined,
    original,
  };
}

/**
 * The body of the last part of a multipart message, byte for byte: where a report of ours
 * keeps the original. A parser would hand back the original with its line endings changed;
 * a replay must store it as it was. Undefined when the text is not laid out that way.
 */
function lastPartBody(raw: Buffer, boundary: string | undefined): Buffer | undefined {
  if (boundary === undefined) {
    return undefined;
  }
  const close = raw.lastIndexOf(`\r\n--${boundary}--`);
  const open = raw.lastIndexOf(`--${boundary}\r\n`, close);
  const bodyStart = open === -1 ? -1 : raw.indexOf('\r\n\r\n', open);
  if (close === -1 || open === -1 || bodyStart === -1 || bodyStart > close) {
    return undefined;
  }
  return raw.subarray(bodyStart + 4, close);
}

/** The original of a dead letter, ready to be handed out again: attempts start over. */
export function replayable(info: DeadLetterInfo): Buffer {
  return setHeaders(info.original, { [HEADER.attempts]: undefined, [HEADER.lastError]: undefined });
}
