// Operator access to the messages of one IMAP mailbox of a queue: listing them oldest first,
// removing them by UID, and purging those stored before a time. The store maps a folder of a
// group onto its mailboxes (several for in-flight: one per consumer) and calls these.

import type { ImapFlow } from 'imapflow';
import {
  deleteMessages,
  uidsByArrival,
  formatSearchDate,
  formatUidSet,
  internalDateMs,
  searchAllUids,
  selectIfExists,
} from './commands.js';

/** Message texts fetched per command when listing: bounds one response, not the whole list. */
export const LIST_BATCH_MAX_MESSAGES = 200;

/** Messages whose INTERNALDATE one purge step reads and deletes: bounds each command. */
export const PURGE_BATCH_MAX_MESSAGES = 1_000;

/** How far SEARCH BEFORE is asked to look past the purge time: it compares dates, not times. */
const SEARCH_DATE_MARGIN_MS = 2 * 24 * 60 * 60 * 1000;

/** A message of a mailbox, as listed. */
export interface MailboxMessage {
  uid: number;
  raw: Buffer;
  /** INTERNALDATE. */
  storedAt: Date;
}

/**
 * The `limit` oldest messages of `mailbox` (all without a limit), by INTERNALDATE and then
 * UID; none when the mailbox does not exist.
 */
export async function listOldest(
  client: ImapFlow,
  mailbox: string,
  limit?: number,
): Promise<MailboxMessage[]> {
  if (limit === 0 || !(await selectIfExists(client, mailbox)) || !client.mailbox) {
    return [];
  }
  if (client.mailbox.exists === 0) {
    return [];
  }

  // With a limit, only the UIDs of the oldest: SORT ARRIVAL is INTERNALDATE order.
  let uids: number[];
  const sorted =
    limit === undefined ? undefined : await uidsByArrival(client, ['UNDELETED'], limit);
  if (sorted !== undefined) {
    uids = sorted;
  } else if (limit === undefined) {
    uids = await searchAllUids(client, ['UNDELETED']);
  } else {
    const dated = await client.fetchAll(
      '1:*',
      { uid: true, internalDate: true, flags: true },
      { uid: true },
    );
    uids = dated
      .filter((message) => !message.flags?.has('\\Deleted'))
      .map((message) => ({ uid: message.uid, at: internalDateMs(message.internalDate) }))
      .sort((a, b) => a.at - b.at || a.uid - b.uid)
      .slice(0, limit)
      .map((message) => message.uid);
  }

  const messages: MailboxMessage[] = [];
  for (let start = 0; start < uids.length; start += LIST_BATCH_MAX_MESSAGES) {
    const batch = uids.slice(start, start + LIST_BATCH_MAX_MESSAGES);
    const fetched = await client.fetchAll(
      formatUidSet(batch),
      { uid: true, internalDate: true, source: true },
      { uid: true },
    );
    for (const message of fetched) {
      if (message.source) {
        const storedAt = new Date(internalDateMs(message.internalDate));
        messages.push({ uid: message.uid, raw: message.source, storedAt });
      }
    }
  }
  return messages.sort((a, b) => a.storedAt.getTime() - b.storedAt.getTime() || a.uid - b.uid);
}

/** Deletes the messages of `mailbox` with these UIDs; returns how many there were. */
export async function removeUids(
  client: ImapFlow,
  mailbox: string,
  uids: number[],
): Promise<number> {
  if (uids.length === 0 || !(await selectIfExists(client, mailbox))) {
    return 0;
  }
  const present = await searchAllUids(client, ['UID', formatUidSet(uids), 'UNDELETED']);
  await deleteMessages(client, present);
  return present.length;
}

/** Deletes the messages of `mailbox` whose INTERNALDATE is before `before`; returns how many. */
export async function purgeBefore(
  client: ImapFlow,
  mailbox: string,
  before: Date,
): Promise<number> {
  if (!(await selectIfExists(client, mailbox))) {
    return 0;
  }

  // SEARCH BEFORE compares dates without their time, in a time zone the server picks, so it
  // is asked for a superset and each INTERNALDATE compared here, a batch at a time.
  const horizon = new Date(before.getTime() + SEARCH_DATE_MARGIN_MS);
  const candidates = await searchAllUids(client, [
    'BEFORE',
    formatSearchDate(horizon),
    'UNDELETED',
  ]);
  let purged = 0;
  for (let start = 0; start < candidates.length; start += PURGE_BATCH_MAX_MESSAGES) {
    const batch = candidates.slice(start, start + PURGE_BATCH_MAX_MESSAGES);
    const dated = await client.fetchAll(
      formatUidSet(batch),
      { uid: true, internalDate: true },
      { uid: true },
    );
    const old = dated
      .filter((message) => internalDateMs(message.internalDate) < before.getTime())
      .map((message) => message.uid);
    await deleteMessages(client, old);
    purged += old.length;
  }
  return purged;
}
