// Changes the header fields of a stored message without touching its body: a redelivered
// message carries its attempt count and last error in the message itself, where a handler and
// a person reading the mailbox both see them.

import { encodeWords, foldLines } from 'nodemailer/lib/mime-funcs';

/** Longest error text kept in a message: enough for a stack trace's first lines. */
export const LAST_ERROR_MAX_LENGTH = 1000;

/** Where the header of a message ends (after its last line break), and its line ending. */
export function headerEnd(raw: Buffer): { end: number; eol: string } {
  const crlf = raw.indexOf('\r\n\r\n');
  const lf = raw.indexOf('\n\n');
  if (crlf !== -1 && (lf === -1 || crlf < lf)) {
    return { end: crlf + 2, eol: '\r\n' };
  }
  if (lf !== -1) {
    return { end: lf + 1, eol: '\n' };
  }
  return { end: raw.length, eol: '\r\n' };
}

/**
 * Returns the message with the named fields replaced: every old occurrence (with its folded
 * continuation lines) is removed, and the new value, if any, is put at the top of the header,
 * where trace fields go. A value of undefined only removes the field.
 */
export function setHeaders(raw: Buffer, fields: Record<string, string | undefined>): Buffer {
  const { end, eol } = headerEnd(raw);
  const names = new Set(Object.keys(fields).map((name) => name.toLowerCase()));
  const lines = raw.subarray(0, end).toString('latin1').split(/\r?\n/);

  const kept: string[] = [];
  let dropping = false;
  for (const line of lines) {
    if (line === '') {
      continue;
    }
    const continuation = line.startsWith(' ') || line.startsWith('\t');
    if (!continuation) {
      const colon = line.indexOf(':');
      dropping = colon > 0 && names.has(line.slice(0, colon).trim().toLowerCase());
    }
    if (!dropping) {
      kept.push(line);
    }
  }

  const added: string[] = [];
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined) {
      continue;
    }
    const oneLine = value.replace(/[\r\n\t]+/g, ' ').slice(0, LAST_ERROR_MAX_LENGTH);
    const encoded = encodeWords(oneLine, 'Q', 52, false);
    added.push(foldLines(`${name}: ${encoded}`, 76, false).replace(/\r?\n/g, eol));
  }

  const header = [...added, ...kept].join(eol) + eol;
  return Buffer.concat([Buffer.from(header, 'latin1'), raw.subarray(end)]);
}
