// Whose turn it is, per ordering key, in one group on an IMAP server. Messages that share a key
// are handed out one at a time in publish order: the oldest unsettled message of a key holds
// the turn, and no other message of that key is claimed until it is acked or dead-lettered.
//
// A turn is a small message in the group's Turns mailbox, naming the key's digest and the
// holder's Message-ID (which every retried copy keeps). A claimer APPENDs its record before the
// conditional STORE that claims the message, and reads the records after its SEARCH of the
// group. That order makes turns safe across consumers without a lock: a claimer that no longer
// finds a message of a key waiting, because another consumer claimed it, finds that consumer's
// record. Several records may name one holder (two claimers reached for it; the loser removes
// its own); ending a turn removes them all.

import { randomBytes } from 'node:crypto';
import type { ImapFlow } from 'imapflow';
import type { Logger } from '../../log.js';
import { errorText } from '../../errors.js';
import {
  appendMessages,
  creatingMailbox,
  deleteMessages,
  isMissingMailbox,
  readFields,
} from './commands.js';
import type { ImapConnection } from './connection.js';

export const TURN_KEY_HEADER = 'X-Mailbus-Turn-Key';
export const TURN_HOLDER_HEADER = 'X-Mailbus-Turn-Holder';

/** A message that wants its key's turn: the key's digest and the message's Message-ID. */
export interface TurnClaim {
  keyDigest: string;
  messageId: string;
}

export interface TurnRecord extends TurnClaim {
  uid: number;
  writtenMs: number;
}

export class ImapTurns {
  // Whether this consumer has met a key at all: until then it keeps no turns connection open.
  private used = false;

  constructor(
    /** The Turns mailbox of the group. */
    readonly mailbox: string,
    /** A connection of its own, so that reading turns never unselects the group. */
    private readonly connection: ImapConnection,
    private readonly consumer: string,
    private readonly log: Logger,
  ) {}

  /** Every record; none when the mailbox does not exist yet. */
  async records(): Promise<TurnRecord[]> {
    this.used = true;
    return await this.connection.run(
      { command: 'FETCH', mailbox: this.mailbox },
      async (client) => await readRecords(client, this.mailbox),
      null,
    );
  }

  /** The Message-IDs that hold a turn, by key digest. */
  async holders(): Promise<Map<string, Set<string>>> {
    const holders = new Map<string, Set<string>>();
    for (const record of await this.records()) {
      const ids = holders.get(record.keyDigest) ?? new Set<string>();
      ids.add(record.messageId);
      holders.set(record.keyDigest, ids);
    }
    return holders;
  }

  /** Records that these messages hold their keys' turns; returns the records' UIDs in order. */
  async write(turns: TurnClaim[]): Promise<number[]> {
    if (turns.length === 0) {
      return [];
    }
    this.used = true;
    const at = new Date();
    const messages = turns.map((turn) => ({
      raw: recordText(turn, this.consumer, at),
      flags: ['\\Seen'],
    }));
    const uids = await this.connection.run(
      { command: 'APPEND', mailbox: this.mailbox },
      async (client) =>
        await creatingMailbox(client, this.mailbox, () =>
          appendMessages(client, this.mailbox, messages),
        ),
      null,
    );
    return uids ?? [];
  }

  /** Removes records by UID: those of claims this consumer lost. */
  async remove(uids: number[]): Promise<void> {
    if (uids.length === 0) {
      return;
    }
    await this.connection.run({ command: 'EXPUNGE', mailbox: this.mailbox }, async (client) => {
      await client.mailboxOpen(this.mailbox);
      await deleteMessages(client, uids);
    });
  }

  /** Ends the turns of these holders: removes every record naming one, whoever wrote it. */
  async end(turns: TurnClaim[]): Promise<void> {
    if (turns.length === 0) {
      return;
    }
    const ending = new Set(turns.map((turn) => `${turn.keyDigest} ${turn.messageId}`));
    await this.connection.run(
      { command: 'EXPUNGE', mailbox: this.mailbox },
      async (client) => {
        const records = await readRecords(client, this.mailbox);
        const uids = records
          .filter((record) => ending.has(`${record.keyDigest} ${record.messageId}`))
          .map((record) => record.uid);
        await deleteMessages(client, uids);
      },
      null,
    );
  }

  /**
   * Removes records older than `olderThanMs` whose holder is in none of `mailboxes` (the group,
   * its Scheduled and in-progress mailboxes), looked for twice: left by a consumer that died
   * between settling a message and ending its turn, or between recording and losing a claim.
   */
  async sweep(olderThanMs: number, mailboxes: () => Promise<string[]>): Promise<void> {
    if (!this.used) {
      return;
    }
    const before = Date.now() - olderThanMs;
    const old = (await this.records()).filter((record) => record.writtenMs < before);
    if (old.length === 0) {
      return;
    }
    let suspects = old;
    for (let look = 0; look < 2 && suspects.length > 0; look += 1) {
      const places = await mailboxes();
      suspects = await this.missing(suspects, places);
    }
    if (suspects.length === 0) {
      return;
    }
    await this.remove(suspects.map((record) => record.uid));
    for (const record of suspects) {
      this.log.warn({ event: 'turn.stale', holder: record.messageId });
    }
  }

  /** The records whose holder none of `mailboxes` holds. */
  private async missing(records: TurnRecord[], mailboxes: string[]): Promise<TurnRecord[]> {
    const found = new Set<string>();
    for (const mailbox of mailboxes) {
      const left = records.filter((record) => !found.has(record.messageId));
      if (left.length === 0) {
        break;
      }
      await this.connection.run(
        { command: 'SEARCH', mailbox },
        async (client) => {
          try {
            await client.mailboxOpen(mailbox, { readOnly: true });
          } catch (err) {
            if (isMissingMailbox(err)) {
              return;
            }
            throw err;
          }
          for (const record of left) {
            const header = { 'message-id': `<${record.messageId}>` };
            const uids = await client.search({ header }, { uid: true });
            if (uids && uids.length > 0) {
              found.add(record.messageId);
            }
          }
        },
        null,
      );
    }
    return records.filter((record) => !found.has(record.messageId));
  }

  async close(): Promise<void> {
    try {
      await this.connection.close();
    } catch (err) {
      this.log.debug({ err: errorText(err) }, 'turns connection did not close cleanly');
    }
  }
}

async function readRecords(client: ImapFlow, mailbox: string): Promise<TurnRecord[]> {
  const records: TurnRecord[] = [];
  for (const { uid, storedMs, fields } of await readFields(client, mailbox, [
    TURN_KEY_HEADER,
    TURN_HOLDER_HEADER,
  ])) {
    const keyDigest = fields.get(TURN_KEY_HEADER.toLowerCase());
    const messageId = fields.get(TURN_HOLDER_HEADER.toLowerCase());
    const writtenMs = Number.isFinite(storedMs) ? storedMs : Date.now();
    if (keyDigest && messageId) {
      records.push({ uid, keyDigest, messageId, writtenMs });
    }
  }
  return records;
}

/** A record, readable in a mail client: which message holds which key's turn. */
function recordText(turn: TurnClaim, consumer: string, at: Date): Buffer {
  const unique = `${at.getTime()}.${randomBytes(4).toString('hex')}`;
  const lines = [
    `Date: ${at.toUTCString()}`,
    'From: mailbus <mailbus@turns.invalid>',
    `Subject: key ${turn.keyDigest} held by <${turn.messageId}>`,
    `Message-ID: <turn.${unique}@mailbus.invalid>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    `${TURN_KEY_HEADER}: ${turn.keyDigest}`,
    `${TURN_HOLDER_HEADER}: ${turn.messageId}`,
    '',
    `The message <${turn.messageId}> holds the turn of its ordering key (digest`,
    `${turn.keyDigest}); consumer ${consumer} recorded it at ${at.toISOString()}.`,
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'utf8');
}
