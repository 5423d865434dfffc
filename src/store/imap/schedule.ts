// How a message waits in a group's Scheduled mailbox until its time: the copy that goes in for a
// delayed publish or a retry in backoff, and how its due time is read back.
//
// The due time is the INTERNALDATE, set by APPEND: SORT ARRIVAL finds the earliest messages by
// it, and it is what a mail client shows. Two limits of IMAP shape the details:
// - IMAP dates have whole seconds, so the INTERNALDATE is notBefore rounded up to the next
//   second: a message is never handed out early, and up to a second late.
// - Servers do not take just any future date. Dovecot 2.3 stores "now" instead of an APPEND
//   date more than two hours ahead (INTERNALDATE_MAX_FUTURE_SECS in its cmd-append.c), silently:
//   a message scheduled for tomorrow would be handed out at once. So a message due beyond
//   SCHEDULE_HORIZON_MS goes in dated at the horizon, with its real time in a header line put in
//   front of its text (NOT_BEFORE_HEADER). When that date comes, the promoter finds the header
//   and, instead of handing the message out, stores it again: dated at the next horizon, or at
//   its real time once that is near, and then without the header line, so the message a
//   consumer receives is byte for byte the one published. A message due in a week makes one
//   such hop an hour: a few round trips, and a duplicate at worst if a promoter dies between
//   storing the new copy and deleting the old one.

/** Names a scheduled copy's due time when its INTERNALDATE cannot (see above). */
export const NOT_BEFORE_HEADER = 'X-Mailbus-Not-Before';

/**
 * How far ahead an INTERNALDATE may be set: half of Dovecot's two hours, leaving room for a
 * server clock that runs behind ours.
 */
export const SCHEDULE_HORIZON_MS = 60 * 60 * 1000;

/** A message as it goes into Scheduled: the text to APPEND and the INTERNALDATE to give it. */
export interface ScheduledCopy {
  raw: Buffer;
  internalDate: Date;
}

/**
 * The copy of `raw` to APPEND to Scheduled for `notBefore`: dated at notBefore rounded up to the
 * second, or, beyond the horizon, dated at the horizon with NOT_BEFORE_HEADER in front.
 */
export function scheduledCopy(raw: Buffer, notBefore: Date, nowMs = Date.now()): ScheduledCopy {
  const dueMs = ceilToSecond(notBefore.getTime());
  if (dueMs - nowMs <= SCHEDULE_HORIZON_MS) {
    return { raw, internalDate: new Date(dueMs) };
  }
  const line = Buffer.from(`${NOT_BEFORE_HEADER}: ${new Date(dueMs).toISOString()}\r\n`, 'ascii');
  return {
    raw: Buffer.concat([line, raw]),
    internalDate: new Date(ceilToSecond(nowMs + SCHEDULE_HORIZON_MS)),
  };
}

/**
 * The due time a scheduled copy names in its first header line (epoch ms), and its text without
 * that line; undefined when it has none (its INTERNALDATE is its due time).
 */
export function readNotBefore(raw: Buffer): { dueMs: number; original: Buffer } | undefined {
  const head = raw.subarray(0, 200).toString('latin1');
  const match = new RegExp(`^${NOT_BEFORE_HEADER}:[ \\t]*(\\S+)\\r?\\n`, 'i').exec(head);
  const dueMs = match ? Date.parse(match[1] ?? '') : NaN;
  if (!match || !Number.isFinite(dueMs)) {
    return undefined;
  }
  return { dueMs, original: raw.subarray(Buffer.byteLength(match[0], 'latin1')) };
}

function ceilToSecond(ms: number): number {
  return Math.ceil(ms / 1000) * 1000;
}
