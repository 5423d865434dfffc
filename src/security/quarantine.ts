// Quarantined messages as they are stored: the original text, unchanged but for two header
// fields of ours at the top that say why and when it was set aside. Quarantine is where a
// message goes that a verifying consumer may not hand to its handler; it stays there until an
// operator releases or deletes it, so nothing is lost for failing verification.

import PostalMime, { decodeWords } from 'postal-mime';
import { derivedMessageId } from '../message/decode.js';
import { HEADER } from '../message/headers.js';
import { headerEnd, setHeaders } from '../message/rewrite.js';

export const QUARANTINE_HEADER = {
  reason: HEADER.quarantineReason,
  at: HEADER.quarantinedAt,
} as const;

/** Why a message was quarantined. */
export const QUARANTINE_REASONS = [
  'unsigned',
  'unknown-key',
  'bad-signature',
  'stale',
  'replayed',
  'dkim',
  'malformed',
  'too-large',
] as const;

export type QuarantineReason = (typeof QUARANTINE_REASONS)[number];

export interface QuarantineVerdict {
  reason: QuarantineReason;
  /** One line for people: what exactly was wrong. */
  detail: string;
}

/** The message text to store in quarantine: the original with the reason at the top. */
export function quarantinedCopy(raw: Buffer, verdict: QuarantineVerdict, at = new Date()): Buffer {
  return setHeaders(raw, {
    [QUARANTINE_HEADER.reason]: `${verdict.reason}: ${verdict.detail}`,
    [QUARANTINE_HEADER.at]: at.toISOString(),
  });
}

/** The two fields of ours, as header lines with a line break after each. */
export function quarantineFields(verdict: QuarantineVerdict, at = new Date()): Buffer {
  return quarantinedCopy(Buffer.from('\r\n'), verdict, at);
}

/**
 * The quarantine copy of a message too large to load, from its first bytes: write `head`, then
 * the stored message from byte `from` on. When the whole header is within `prefix`, it is
 * rewritten as quarantinedCopy() does (a reason field the sender wrote is dropped); when it is
 * not, our fields go in front of the untouched text, where they are the first of their name.
 */
export function quarantineHead(
  prefix: Buffer,
  verdict: QuarantineVerdict,
  at = new Date(),
): { head: Buffer; from: number } {
  const { end } = headerEnd(prefix);
  if (end < prefix.length) {
    return { head: quarantinedCopy(prefix, verdict, at), from: prefix.length };
  }
  return { head: quarantineFields(verdict, at), from: 0 };
}

/** The original text of a quarantined message, without our two fields. */
export function releasedCopy(raw: Buffer): Buffer {
  return setHeaders(raw, {
    [QUARANTINE_HEADER.reason]: undefined,
    [QUARANTINE_HEADER.at]: undefined,
  });
}

export interface QuarantineInfo {
  id: string;
  subject: string;
  reason: QuarantineReason | 'unknown';
  detail: string;
  quarantinedAt: Date | undefined;
}

/** Reads a quarantined message's id and reason; mail that cannot be parsed still gets an id. */
export async function readQuarantined(raw: Buffer): Promise<QuarantineInfo> {
  let headers: { key: string; value: string }[] = [];
  let subject = '';
  try {
    const email = await PostalMime.parse(raw);
    headers = email.headers;
    subject = email.subject ?? '';
  } catch {
    // Malformed mail is quarantined too: it is listed by its derived id.
  }
  const first = (name: string) => headers.find((header) => header.key === name)?.value;

  const messageId = first('message-id')?.trim().replace(/^<|>$/g, '');
  const stated = decodeWords(first(QUARANTINE_HEADER.reason.toLowerCase()) ?? '');
  const colon = stated.indexOf(':');
  const code = colon === -1 ? stated.trim() : stated.slice(0, colon).trim();
  const reason = (QUARANTINE_REASONS as readonly string[]).includes(code)
    ? (code as QuarantineReason)
    : 'unknown';
  const at = new Date(first(QUARANTINE_HEADER.at.toLowerCase()) ?? '');
  return {
    id: messageId || derivedMessageId(releasedCopy(raw)),
    subject,
    reason,
    detail: colon === -1 ? '' : stated.slice(colon + 1).trim(),
    quarantinedAt: Number.isNaN(at.getTime()) ? undefined : at,
  };
}
