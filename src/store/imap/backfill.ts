// Backfilling a new group from its topic's mailbox: a replay from `earliest` or from a time.
//
// A publish APPENDs to the topic first and only then LISTs the groups and COPYs to them
// (publish.ts). The subscriber creates the group first and then reads the topic's UIDNEXT. So a
// publish that did not see the group has a UID below that UIDNEXT; the backfill takes every
// topic message below it (at or after `from`) with one UID COPY, and none is missed.
//
// A publish that APPENDed before the UIDNEXT was read but LISTed after the group was made is
// in both sets: its publisher copies it to the group, and so does the backfill. Those few (the
// publishes under way during the subscribe) are found by Message-ID: a message the group
// already has is not copied, and a publisher's copy that arrives after the backfill's makes
// the backfill delete its own, once publishes under way have had time to finish.

import type { ImapFlow } from 'imapflow';
import type { BackfillProgress } from '../store.js';
import {
  copyMessages,
  deleteMessages,
  formatSearchDate,
  formatUidSet,
  isMissingMailbox,
  searchAllUids,
} from './commands.js';

/** How long a publish under way is given to copy to the groups after its APPEND. */
export const PUBLISH_SETTLE_MS = 1_000;

/** UIDs per FETCH while dates and ids are read: bounds one response. */
const FETCH_BATCH = 1_000;

/** UIDs per UID COPY: a long backfill tells its progress after each. */
const COPY_BATCH = 500;

/** SEARCH SINCE compares dates in a time zone the server picks: ask for more, then compare. */
const SEARCH_DATE_MARGIN_MS = 2 * 24 * 60 * 60 * 1000;

export interface BackfillMailboxes {
  topic: string;
  group: string;
  /** Topic messages whose INTERNALDATE is at or after this time (to the second) are copied. */
  from: Date;
  onProgress?: BackfillProgress;
}

/** What the first step copied, for the second step to check. */
export interface Backfilled {
  /** The group's UIDs of the copies the backfill made. */
  copies: number[];
  /** The group's UIDNEXT before the copy: publishers' copies from there on are checked. */
  groupUidNext: number;
  /** When the topic's UIDNEXT was read. */
  at: number;
}

/**
 * Copies the topic's messages stored since `from` into a group created just before, leaving out
 * those the group has already been given by their publishers.
 */
export async function copyTopicIntoGroup(
  client: ImapFlow,
  { topic, group, from, onProgress }: BackfillMailboxes,
): Promise<Backfilled> {
  const report = onProgress ?? (() => undefined);
  // SELECT, not STATUS: Dovecot answers STATUS of the mailbox a session has selected from that
  // session's view, which lacks what other sessions stored since its last command.
  const uidNext = await freshUidNext(client, topic);
  const at = Date.now();
  if (uidNext <= 1) {
    report(0, 0);
    return { copies: [], groupUidNext: 1, at };
  }

  let uids = await searchAllUids(client, ['UID', `1:${uidNext - 1}`, 'UNDELETED', ...since(from)]);
  if (from.getTime() > 0) {
    uids = await storedSince(client, uids, from);
  }

  const groupUidNext = await freshUidNext(client, group);
  const given = new Set((await messageIds(client, '1:*')).values());
  await client.mailboxOpen(topic);
  if (given.size > 0 && uids.length > 0) {
    const ids = await messageIds(client, uids);
    uids = uids.filter((uid) => !given.has(ids.get(uid) ?? ''));
  }
  report(0, uids.length);
  if (uids.length === 0) {
    return { copies: [], groupUidNext, at };
  }

  // In UID order, a batch at a time: the group receives them in publish order all the same.
  const copies: number[] = [];
  for (let start = 0; start < uids.length; start += COPY_BATCH) {
    const batch = uids.slice(start, start + COPY_BATCH);
    const copied = await copyMessages(client, batch, group);
    copies.push(...copied.targets.values());
    report(Math.min(start + COPY_BATCH, uids.length), uids.length);
  }
  return { copies, groupUidNext, at };
}

/**
 * Deletes the backfill's copy of every message that a publisher copied into the group after
 * the backfill did. Waits until publishes under way at the subscribe have had time to finish.
 */
export async function dropLateDuplicates(
  client: ImapFlow,
  group: string,
  backfilled: Backfilled,
): Promise<number> {
  const { copies, groupUidNext } = backfilled;
  if (copies.length === 0) {
    return 0;
  }
  try {
    await freshUidNext(client, group);
  } catch (err) {
    if (isMissingMailbox(err)) {
      return 0;
    }
    throw err;
  }
  const ours = new Set(copies);
  const later = await searchAllUids(client, ['UID', `${groupUidNext}:*`, 'UNDELETED']);
  const theirs = later.filter((uid) => !ours.has(uid));
  if (theirs.length === 0) {
    return 0;
  }

  const arrived = new Set((await messageIds(client, theirs)).values());
  const ourIds = await messageIds(client, copies);
  const duplicates = copies.filter((uid) => arrived.has(ourIds.get(uid) ?? ''));
  await deleteMessages(client, duplicates);
  return duplicates.length;
}

/**
 * Selects `mailbox`, again when it is selected already, so that the session sees every message
 * stored so far; returns its UIDNEXT.
 */
async function freshUidNext(client: ImapFlow, mailbox: string): Promise<number> {
  const opened = await client.mailboxOpen(mailbox);
  return Number(opened.uidNext);
}

/** The SINCE criterion that narrows the search to `from` and after (none for `earliest`). */
function since(from: Date): string[] {
  if (from.getTime() <= SEARCH_DATE_MARGIN_MS) {
    return [];
  }
  return ['SINCE', formatSearchDate(new Date(from.getTime() - SEARCH_DATE_MARGIN_MS))];
}

/** Those of `uids` whose INTERNALDATE is at or after `from`, compared to the second. */
async function storedSince(client: ImapFlow, uids: number[], from: Date): Promise<number[]> {
  // INTERNALDATE has whole seconds: a message stored in the second of `from` counts as after it.
  const floor = Math.floor(from.getTime() / 1000) * 1000;
  const kept: number[] = [];
  for (let start = 0; start < uids.length; start += FETCH_BATCH) {
    const batch = uids.slice(start, start + FETCH_BATCH);
    const dated = await client.fetchAll(
      formatUidSet(batch),
      { uid: true, internalDate: true },
      { uid: true },
    );
    for (const message of dated) {
      if (new Date(message.internalDate ?? 0).getTime() >= floor) {
        kept.push(message.uid);
      }
    }
  }
  return kept.sort((a, b) => a - b);
}

/** The Message-ID of each message of the selected mailbox, by UID. */
async function messageIds(client: ImapFlow, uids: number[] | string): Promise<Map<number, string>> {
  const ids = new Map<number, string>();
  if (client.mailbox && client.mailbox.exists === 0) {
    return ids;
  }
  const sets =
    typeof uids === 'string'
      ? [uids]
      : Array.from({ length: Math.ceil(uids.length / FETCH_BATCH) }, (_, i) =>
          formatUidSet(uids.slice(i * FETCH_BATCH, (i + 1) * FETCH_BATCH)),
        );
  for (const set of sets) {
    const fetched = await client.fetchAll(
      set,
      { uid: true, headers: ['message-id'] },
      { uid: true },
    );
    for (const message of fetched) {
      const id = /^message-id:\s*(.*?)\s*$/im.exec(message.headers?.toString('latin1') ?? '');
      if (id?.[1]) {
        ids.set(message.uid, id[1]);
      }
    }
  }
  return ids;
}
