// The operator's view of one stored message, whatever state it is in: what the CLI's peek and
// tail print and what the dashboard's message page shows. A dead letter is shown as the message
// it reports on, with the report's attempts and last error.

import { readDeadLetter, replayable } from '../consumer/dead-letter.js';
import { ERROR_CODES, MailbusError, errorText } from '../errors.js';
import { decodeMessage, derivedMessageId } from '../message/decode.js';
import type { Priority } from '../message/message.js';
import { STATE_FOLDERS } from '../store/store.js';
import type { MessageState, SearchHit, Store } from '../store/store.js';

export interface MessageView {
  id: string;
  topic: string;
  group: string;
  state: MessageState;
  /** Names it in its folder, for actions on it (a file name or a UID). */
  ref: string;
  /** Where it is: the mailbox and file name or UID. */
  location: string;
  storedAt: Date;
  subject: string;
  key?: string;
  priority: Priority;
  /** Attempts at handling it so far. */
  attempts: number;
  lastError?: string;
  headers: Record<string, string>;
  payload: unknown;
  contentType: string;
  /** Why the text could not be decoded, when it could not (it is then shown as it is). */
  undecodable?: string;
}

export async function viewMessage(hit: SearchHit): Promise<MessageView> {
  const { topic, group, state, ref, location, storedAt } = hit;
  const place = { topic, group, state, ref, location, storedAt };
  let original = hit.raw;
  let reported: { attempts: number; lastError: string } | undefined;
  if (state === 'dead') {
    try {
      const letter = await readDeadLetter(hit.raw);
      original = letter.original;
      reported = { attempts: letter.attempts, lastError: letter.lastError };
    } catch {
      // Mail moved into the dead letters by hand: it is its own original.
    }
  }

  try {
    const message = await decodeMessage(original, { topic, group });
    return {
      ...place,
      id: message.id,
      subject: message.subject,
      key: message.key,
      priority: message.priority,
      // A message's attempt is the number of its next delivery: one more than those made.
      attempts: reported?.attempts ?? message.attempt - 1,
      lastError: reported?.lastError ?? message.lastError,
      headers: message.headers,
      payload: message.payload,
      contentType: message.contentType,
    };
  } catch (err) {
    return {
      ...place,
      id: derivedMessageId(original),
      subject: '',
      priority: 'normal',
      attempts: reported?.attempts ?? 0,
      lastError: reported?.lastError,
      headers: {},
      payload: original.toString('utf8'),
      contentType: 'message/rfc822',
      undecodable: errorText(err),
    };
  }
}

/** A message of a group's state, by its id (a dead letter by the id it reports on). */
export async function findMessage(
  store: Store,
  where: { topic: string; group: string; state: MessageState; id: string },
): Promise<SearchHit> {
  const { topic, group, state, id } = where;
  const page = await store.search({ topic, group, states: [state], id }, { limit: 1 });
  const [hit] = page.hits;
  if (hit === undefined) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `no ${state} message ${id} in ${topic}/${group}`,
    );
  }
  return hit;
}

/**
 * Hands a message back to its group's waiting messages, from any other state: a scheduled
 * retry that should not wait, a claim stuck with a consumer, a handled message to run again,
 * a dead letter (as a replay does, attempts reset). The copy is stored before the message is
 * removed from where it was, so a crash in between duplicates and never loses it. A consumer
 * still holding a message moved from in flight loses its claim: its ack or release fails.
 */
export async function moveToWaiting(store: Store, hit: SearchHit): Promise<void> {
  if (hit.state === 'waiting') {
    return;
  }
  const raw = hit.state === 'dead' ? replayable(await readDeadLetter(hit.raw)) : hit.raw;
  await store.restore(hit.topic, hit.group, raw);
  await store.remove({ topic: hit.topic, group: hit.group, folder: STATE_FOLDERS[hit.state] }, [
    hit.ref,
  ]);
}
