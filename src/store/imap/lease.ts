// The leases of one group's consumers on IMAP: heartbeats, how a consumer is judged dead, and how
// another consumer takes over the in-progress mailbox of a dead one.
//
// Heartbeats. Each consumer APPENDs a small message to the group's `Consumers` mailbox
// (`orders.default.Consumers`), with `X-Mailbus-Consumer: <id>` and `Subject: consumer <id>`:
// a mail client shows which workers are alive and when each last said so. The time is read from
// the header X-Mailbus-Alive-At (milliseconds) and not from INTERNALDATE alone, because IMAP
// dates have whole seconds: a heartbeat would look up to a second older than it is, and with a
// short lease a live consumer would look dead. One APPEND is the whole cost of a heartbeat; the
// owner does not expunge its previous one (that would take selecting Consumers and back), the
// next recover() of any consumer does, keeping the newest heartbeat of each consumer.
//
// Who is dead. A consumer is dead when its newest heartbeat is older than the lease. A consumer
// with an in-progress mailbox but no heartbeat at all (it crashed between creating the mailbox
// and its first heartbeat, or it runs a version without heartbeats) is dead once this recoverer
// has seen it so for a lease: a claimer heartbeats once before it creates its in-progress
// mailbox, so a live one is never in that state for long. Times are compared with this
// machine's clock, so the consumers' clocks must agree to well under a lease.
//
// A recoverer that was cut off itself gives the others a lease from its reconnect. A fault that
// cut it off (the server restarting, the network going silent) most likely cut the others off
// too, and their heartbeats are as late as its own; judged at once, consumers that are alive and
// reconnecting at the same moment would take each other's claims over while handling them.
//
// Taking over. The exclusive step is a RENAME of the dead consumer's in-progress mailbox to a
// name only the recoverer knows: `In-Progress.<dead>~<recoverer>~<random>`, a "tomb". RENAME is
// atomic (Dovecot renames the directory), so of several recoverers racing for the same mailbox
// exactly one succeeds and the others are told it does not exist; the winner then owns every
// message in the tomb without a per-message claim, moves them to its own in-progress mailbox
// and deletes the empty tomb. This is simpler than claiming each message with a conditional
// STORE of a keyword, and it closes the race a per-message claim leaves open: deleting the dead
// consumer's mailbox once it looks empty would lose a message that a not-quite-dead consumer
// moves into it between the look and the DELETE, while a message moved in after the RENAME
// finds no mailbox (TRYCREATE), and one moved in before it is in the tomb and taken over.
//
// What the renamed consumer sees. Dovecot disconnects a session whose selected mailbox is
// renamed or deleted; the dead consumer's next settle reconnects, finds its in-progress mailbox
// missing, or recreated with a new UIDVALIDITY, and fails with ELEASELOST. A consumer that was
// only slow and claims again recreates its mailbox on the TRYCREATE of its MOVE, and lives on
// once it heartbeats. A tomb is itself an in-progress mailbox, with '~' in the consumer part so
// it can never be a live consumer's (consumer names are [a-z0-9_-]): a recoverer that dies
// while draining one leaves it behind, its own next recover() finishes the job, and when that
// recoverer is dead too another one takes the tomb over in turn.
//
// The race this accepts: a consumer judged dead that settles a claim at the very moment it is
// taken over (its ack's MOVE against the recoverer's) may see both succeed, on a server where
// MOVE is not exclusive: the message is then handled and also handed out again. A duplicate,
// never a loss, and only for a consumer that went a whole lease without a heartbeat.

import { randomBytes } from 'node:crypto';
import type { ImapFlow } from 'imapflow';
import type { Layout } from '../layout.js';
import type { ClaimedMessage } from './claim.js';
import {
  creatingMailbox,
  fetchClaimTexts,
  formatUidSet,
  readFields,
  isMissingMailbox,
  mailboxStatus,
  moveMessages,
  searchAllUids,
} from './commands.js';

/** Names the consumer a heartbeat is from. */
export const CONSUMER_HEADER = 'X-Mailbus-Consumer';

/** When the heartbeat was sent, as an ISO 8601 time with milliseconds. */
export const ALIVE_AT_HEADER = 'X-Mailbus-Alive-At';

/** Separates the parts of a tomb's name: `<dead>~<recoverer>~<random>`. */
export const TOMB_SEPARATOR = '~';

/** Messages moved out of a tomb per command: bounds one FETCH of message texts. */
export const TAKEOVER_BATCH_MAX_MESSAGES = 200;

/**
 * Batches one takeover moves at most; a bigger tomb is finished by the next recover(). Keeps a
 * recover() call, which holds the settle connection, from running for minutes.
 */
export const TAKEOVER_MAX_BATCHES = 50;

/** One heartbeat message in the Consumers mailbox. */
export interface Heartbeat {
  uid: number;
  consumer: string;
  atMs: number;
}

/** Who an in-progress mailbox belongs to, read from its name. */
export interface Holder {
  mailbox: string;
  /** The consumer whose claims it holds (for a tomb, the dead one's). */
  consumer: string;
  /** Whose liveness decides over it: the consumer, or for a tomb the recoverer draining it. */
  owner: string;
  tomb: boolean;
}

export function consumersMailbox(layout: Layout, topic: string, group: string): string {
  return layout.consumers(topic, group);
}

/** The name of the tomb a recoverer renames a dead consumer's in-progress mailbox to. */
export function tombMailbox(
  layout: Layout,
  topic: string,
  group: string,
  dead: string,
  recoverer: string,
): string {
  const name = [dead, recoverer, randomBytes(3).toString('hex')].join(TOMB_SEPARATOR);
  return layout.inProgress(topic, group) + layout.delimiter + name;
}

/** Reads an in-progress mailbox's name: `<consumer>` or a tomb `<dead>~<recoverer>~<random>`. */
export function parseHolder(mailbox: string, consumerPart: string): Holder {
  const [consumer = consumerPart, owner] = consumerPart.split(TOMB_SEPARATOR);
  return owner === undefined
    ? { mailbox, consumer, owner: consumer, tomb: false }
    : { mailbox, consumer, owner, tomb: true };
}

/** The text of a heartbeat: a small, readable message. */
export function heartbeatMessage(consumer: string, topic: string, group: string, at: Date): Buffer {
  const iso = at.toISOString();
  const unique = `${at.getTime()}.${randomBytes(4).toString('hex')}`;
  const lines = [
    `Date: ${at.toUTCString()}`,
    'From: mailbus <mailbus@heartbeat.invalid>',
    `Subject: consumer ${consumer}`,
    `Message-ID: <heartbeat.${consumer}.${unique}@mailbus.invalid>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    `${CONSUMER_HEADER}: ${consumer}`,
    `${ALIVE_AT_HEADER}: ${iso}`,
    '',
    `Consumer ${consumer} of group ${group} of topic ${topic} was alive at ${iso}.`,
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'ascii');
}

/** Selects the Consumers mailbox and reads every heartbeat in it; none when it does not exist. */
export async function readHeartbeats(client: ImapFlow, mailbox: string): Promise<Heartbeat[]> {
  const heartbeats: Heartbeat[] = [];
  for (const { uid, storedMs, fields } of await readFields(client, mailbox, [
    CONSUMER_HEADER,
    ALIVE_AT_HEADER,
  ])) {
    const consumer = fields.get(CONSUMER_HEADER.toLowerCase());
    const aliveAt = Date.parse(fields.get(ALIVE_AT_HEADER.toLowerCase()) ?? '');
    const atMs = Number.isFinite(aliveAt) ? aliveAt : storedMs;
    if (consumer && Number.isFinite(atMs)) {
      heartbeats.push({ uid, consumer, atMs });
    }
  }
  return heartbeats;
}

/** The newest heartbeat of each consumer. */
export function newestHeartbeats(heartbeats: Heartbeat[]): Map<string, Heartbeat> {
  const newest = new Map<string, Heartbeat>();
  for (const heartbeat of heartbeats) {
    const seen = newest.get(heartbeat.consumer);
    if (
      !seen ||
      heartbeat.atMs > seen.atMs ||
      (heartbeat.atMs === seen.atMs && heartbeat.uid > seen.uid)
    ) {
      newest.set(heartbeat.consumer, heartbeat);
    }
  }
  return newest;
}

/** Judges consumers dead or alive, remembering since when it has seen each without heartbeat. */
export class LeaseJudge {
  private readonly silentSince = new Map<string, number>();

  /**
   * The consumers among `consumers` that are dead: newest heartbeat older than `leaseMs`, or
   * none at all for `leaseMs` of this judge's looks; in both cases for `leaseMs` since
   * `connectedAtMs`, when the recoverer's connection last came up.
   */
  dead(
    consumers: Iterable<string>,
    newest: Map<string, Heartbeat>,
    leaseMs: number,
    nowMs: number,
    connectedAtMs = 0,
  ): Set<string> {
    const dead = new Set<string>();
    const looked = new Set<string>();
    for (const consumer of consumers) {
      looked.add(consumer);
      const heartbeat = newest.get(consumer);
      if (heartbeat) {
        this.silentSince.delete(consumer);
        if (nowMs - Math.max(heartbeat.atMs, connectedAtMs) > leaseMs) {
          dead.add(consumer);
        }
        continue;
      }
      const since = this.silentSince.get(consumer);
      if (since === undefined) {
        this.silentSince.set(consumer, nowMs);
      } else if (nowMs - Math.max(since, connectedAtMs) > leaseMs) {
        dead.add(consumer);
      }
    }
    for (const consumer of [...this.silentSince.keys()]) {
      if (!looked.has(consumer)) {
        this.silentSince.delete(consumer);
      }
    }
    return dead;
  }
}

/**
 * Moves every message of `tomb`, which the caller owns, into `target` (the caller's in-progress
 * mailbox) and deletes the tomb once it is empty. Returns the messages as claims in `target`.
 */
export async function drainTomb(
  client: ImapFlow,
  tomb: string,
  target: string,
  maxBytes?: number,
): Promise<ClaimedMessage[]> {
  try {
    await client.mailboxOpen(tomb);
  } catch (err) {
    if (isMissingMailbox(err)) {
      return [];
    }
    throw err;
  }

  const claimed: ClaimedMessage[] = [];
  for (let batch = 0; batch < TAKEOVER_MAX_BATCHES; batch += 1) {
    const uids = (await searchAllUids(client, ['UNDELETED'])).slice(0, TAKEOVER_BATCH_MAX_MESSAGES);
    if (uids.length === 0) {
      break;
    }
    // The texts first: once moved, the messages are the caller's to hand out as claims.
    const states = await client.fetchAll(
      formatUidSet(uids),
      { uid: true, flags: true, size: true },
      { uid: true },
    );
    const sizes = new Map<number, number>();
    for (const state of states) {
      if (state.size !== undefined) {
        sizes.set(state.uid, state.size);
      }
    }
    const texts = await fetchClaimTexts(client, uids, maxBytes, sizes);
    const moved = await creatingMailbox(client, target, () => moveMessages(client, uids, target));
    for (const state of states) {
      const uid = moved.targets.get(state.uid);
      const text = texts.get(state.uid);
      if (uid !== undefined && text !== undefined) {
        const flagged = state.flags?.has('\\Flagged') ?? false;
        claimed.push({ uid, uidValidity: moved.uidValidity, ...text, flagged });
      }
    }
    if (moved.targets.size === 0) {
      break;
    }
  }

  // Nothing new arrives in a tomb (no consumer has its name), so empty once means empty.
  await client.mailboxClose();
  const status = await mailboxStatus(client, tomb);
  if (status && status.messages === 0) {
    await client.mailboxDelete(tomb);
  }
  return claimed;
}
