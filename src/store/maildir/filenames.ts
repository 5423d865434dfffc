// Maildir file names: a unique base name given at delivery, then `:2,` and the flags in
// alphabetical order (D draft, F flagged, R replied, S seen, T trashed). See
// https://cr.yp.to/proto/maildir.html and Dovecot's `,S=<size>` extension to the base name.

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';

const INFO_SEPARATOR = ':2,';

// Maildir forbids '/' and ':' in the host part; anything outside this set is dropped so that a
// file name is also safe to print and to pass to a shell.
const HOST = hostname().replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';

let deliveryCount = 0;

/**
 * A base name no other delivery on any machine will choose: time, pid, counter, randomness.
 * The time is when the message is due: now for a normal delivery, later for a scheduled one, so
 * that names sort in the order messages are to be handed out. A message with an ordering key
 * carries a digest of the key (`,K=`), so that claimers see its key without reading the file.
 */
export function uniqueBaseName(size: number, timeMs = Date.now(), keyDigest?: string): string {
  const seconds = Math.floor(timeMs / 1000);
  // Zero-padded, so that names sort in delivery order within a second too.
  const micros = String((timeMs % 1000) * 1000).padStart(6, '0');
  deliveryCount += 1;
  const random = randomBytes(4).toString('hex');
  const key = keyDigest === undefined ? '' : `,K=${keyDigest}`;
  return `${seconds}.M${micros}P${process.pid}Q${deliveryCount}R${random}.${HOST},S=${size}${key}`;
}

/** The key digest a base name carries, if its message has an ordering key. */
export function keyDigestOf(base: string): string | undefined {
  return /,K=([0-9a-f]+)/.exec(base)?.[1];
}

/**
 * Orders two names of one process's deliveries as they were made: by time, then by the
 * delivery counter (not zero-padded, so a plain string sort would put Q10 before Q9).
 */
export function compareDeliveryOrder(a: string, b: string): number {
  const byTime = nameTimeMs(a) - nameTimeMs(b);
  if (byTime !== 0) {
    return byTime;
  }
  const counter = (name: string): number => Number(/Q(\d+)/.exec(name)?.[1] ?? 0);
  return counter(a) - counter(b) || (a < b ? -1 : a > b ? 1 : 0);
}

/** The time a file name was given for, in ms since the epoch; 0 for a name not of that form. */
export function nameTimeMs(name: string): number {
  const match = /^(\d+)\.M(\d+)/.exec(name);
  if (!match) {
    const seconds = /^(\d+)\./.exec(name);
    return seconds ? Number(seconds[1]) * 1000 : 0;
  }
  return Number(match[1]) * 1000 + Math.floor(Number(match[2]) / 1000);
}

export interface MaildirName {
  base: string;
  flags: string;
}

export function parseName(name: string): MaildirName {
  const at = name.indexOf(INFO_SEPARATOR);
  if (at === -1) {
    return { base: name, flags: '' };
  }
  return { base: name.slice(0, at), flags: name.slice(at + INFO_SEPARATOR.length) };
}

/** The name of a file in `cur/`, with the flags sorted and without duplicates. */
export function curName(base: string, flags: string): string {
  const sorted = [...new Set(flags)].sort().join('');
  return `${base}${INFO_SEPARATOR}${sorted}`;
}

export function withFlag(flags: string, flag: string): string {
  return flags.includes(flag) ? flags : flags + flag;
}

export const FLAG = {
  flagged: 'F',
  seen: 'S',
  trashed: 'T',
} as const;

/**
 * Where a newly delivered file goes inside a folder: `new/` as Maildir delivery expects, or
 * `cur/` with the F flag for a high-priority message, because a file in new/ carries no flags.
 */
export function placement(base: string, flagged: boolean): string {
  return flagged ? join('cur', curName(base, 'F')) : join('new', base);
}
