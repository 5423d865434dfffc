// Publishing into an IMAP topic: each message is uploaded once, into the topic mailbox, and
// every group gets its copy by a server-side COPY of the UIDs the upload was given. A delayed
// message is uploaded once more per group instead, into the group's Scheduled mailbox, because
// its INTERNALDATE must say when it falls due and COPY keeps the original's (schedule.ts).

import type { ImapFlow } from 'imapflow';
import { ERROR_CODES, MailbusError } from '../../errors.js';
import type { ComposedMessage } from '../../message/compose.js';
import { appendMessages, copyMessages, creatingMailbox } from './commands.js';
import type { AppendedMessage } from './commands.js';
import { scheduledCopy } from './schedule.js';

/**
 * Messages per MULTIAPPEND command. The server stores one command's messages in one
 * transaction (one fsync instead of one each: 4-6x the single-APPEND rate here).
 */
export const MULTIAPPEND_MAX_MESSAGES = 500;

/** Bytes of message text per MULTIAPPEND command: bounds what one failed command resends. */
export const MULTIAPPEND_MAX_BYTES = 8 * 1024 * 1024;

/** The mailboxes of a topic's groups, read when a publish needs them. */
export interface GroupMailboxes {
  /** The group mailboxes, for messages to hand out now. */
  groups: string[];
  /** Their Scheduled mailboxes, for messages to hand out later. */
  scheduled: string[];
}

/**
 * Stores `messages` in `topicMailbox` (selected by the caller) and in every one of the groups,
 * into their Scheduled mailboxes when `notBefore` is given. Resolves once every mailbox has
 * every message.
 *
 * The groups are listed only once the topic has the messages. A group subscribed with a
 * backfill takes the topic's messages below the UIDNEXT it reads after creating itself, so every
 * publish is either below that UIDNEXT or lists the groups after the group was made
 * (backfill.ts).
 */
export async function publishToTopic(
  client: ImapFlow,
  topicMailbox: string,
  listGroups: () => Promise<GroupMailboxes>,
  messages: ComposedMessage[],
  notBefore?: Date,
): Promise<void> {
  checkAppendLimit(client, messages);

  const now = messages.map((message) => ({ raw: message.raw, flags: flagsOf(message) }));

  // The topic's copy is stored as any other; each group's waits in Scheduled, dated when due.
  if (notBefore) {
    await uploadAll(client, topicMailbox, now);
    const later = messages.map((message) => ({
      ...scheduledCopy(message.raw, notBefore),
      flags: flagsOf(message),
    }));
    for (const mailbox of (await listGroups()).scheduled) {
      await creatingMailbox(client, mailbox, () => uploadAll(client, mailbox, later));
    }
    return;
  }

  // Without UIDPLUS there are no UIDs to COPY by: every mailbox gets an APPEND of its own.
  if (!client.capabilities.has('UIDPLUS')) {
    await uploadAll(client, topicMailbox, now);
    for (const mailbox of (await listGroups()).groups) {
      await uploadAll(client, mailbox, now);
    }
    return;
  }

  const uids = await uploadAll(client, topicMailbox, now);
  if (uids.length !== messages.length) {
    throw new MailbusError(
      ERROR_CODES.PROTOCOL,
      `APPEND to ${topicMailbox} returned no APPENDUID, though the server announces UIDPLUS`,
      { command: 'APPEND', mailbox: topicMailbox },
    );
  }
  // COPY acts on the selected mailbox, which is the topic's.
  for (const group of (await listGroups()).groups) {
    await copyMessages(client, uids, group);
  }
}

/** Uploads `messages` into `mailbox`; returns their UIDs there, when the server names them. */
async function uploadAll(
  client: ImapFlow,
  mailbox: string,
  messages: AppendedMessage[],
): Promise<number[]> {
  const uids: number[] = [];
  if (!client.capabilities.has('MULTIAPPEND')) {
    for (const { raw, flags, internalDate } of messages) {
      const appended = await client.append(mailbox, raw, flags, internalDate);
      if (appended && appended.uid !== undefined) {
        uids.push(appended.uid);
      }
    }
    return uids;
  }

  for (const batch of batches(messages)) {
    const appended = await appendMessages(client, mailbox, batch);
    uids.push(...(appended ?? []));
  }
  return uids;
}

function* batches(messages: AppendedMessage[]): Generator<AppendedMessage[]> {
  let batch: AppendedMessage[] = [];
  let bytes = 0;
  for (const message of messages) {
    const full =
      batch.length >= MULTIAPPEND_MAX_MESSAGES ||
      bytes + message.raw.length > MULTIAPPEND_MAX_BYTES;
    if (full && batch.length > 0) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(message);
    bytes += message.raw.length;
  }
  if (batch.length > 0) {
    yield batch;
  }
}

// APPENDLIMIT (RFC 7889): refuse up front what the server would refuse after the upload.
function checkAppendLimit(client: ImapFlow, messages: ComposedMessage[]): void {
  const limit = client.capabilities.get('APPENDLIMIT');
  if (typeof limit !== 'number') {
    return;
  }
  const large = messages.find((message) => message.raw.length > limit);
  if (large) {
    throw new MailbusError(
      ERROR_CODES.MESSAGE_TOO_LARGE,
      `message ${large.id} is ${large.raw.length} bytes; the IMAP server takes at most ${limit}`,
    );
  }
}

/** High priority travels as \Flagged, which claims look for first. */
export function flagsOf(message: ComposedMessage): string[] {
  return message.priority === 'high' ? ['\\Flagged'] : [];
}
