// The arbiter of claims that a conditional STORE could not decide on its own. Dovecot 2.3 checks
// a STORE UNCHANGEDSINCE against a stale MODSEQ for the first message of the set when another
// session's change landed just before the commit: both sessions are then told they changed that
// message, and both MOVEs copy it (measured: with two sessions storing the same three messages
// at once, about 3 rounds in 100 had the lowest UID won by both; with a harmless message stored
// first in every set, none in 2,400 rounds). So after its STORE, a claimer records what it won
// in a claim record, and keeps only what no earlier record names.
//
// Why that is exclusive: a claim record is a message APPENDed to the group's Turns mailbox, and
// the server gives APPENDs increasing UIDs in the order they were stored. Of two claimers that
// won the same message, the one with the lower record UID keeps it: the other one, reading the
// records after writing its own, finds the lower one. A record is removed only after its MOVE
// is done, when the message has left the mailbox: a claimer that finds no record then moves
// nothing either, since the MOVE copies only messages still there (its COPYUID names none).
//
// Cheap when there is no race: the claim connection APPENDs the record and asks STATUS how many
// messages the Turns mailbox holds; only when it holds others are they read, on the turns
// connection. Records are removed in batches on that connection, after the claim returned.
// Records left by a claimer that died are removed once they are older than a lease.

import { randomBytes } from 'node:crypto';
import type { ImapFlow } from 'imapflow';
import { ERROR_CODES, MailbusError, errorText } from '../../errors.js';
import type { Logger } from '../../log.js';
import {
  appendMessages,
  creatingMailbox,
  deleteMessages,
  execute,
  formatUidSet,
  mailboxStatus,
  parseUidSet,
  readFields,
} from './commands.js';
import type { ImapConnection } from './connection.js';

export const CLAIM_SOURCE_HEADER = 'X-Mailbus-Claim-Source';
export const CLAIM_UIDS_HEADER = 'X-Mailbus-Claim-Uids';

/** The mailbox a claim takes messages from, with the UIDVALIDITY its UIDs belong to. */
export interface ClaimSource {
  path: string;
  uidValidity: bigint;
}

/** What arbitrate() decided: the UIDs this claimer keeps, and its record to remove later. */
export interface Arbitration {
  kept: number[];
  record: number;
}

export class ClaimArbiter {
  private readonly done: number[] = [];
  private flushing: Promise<void> | undefined;

  constructor(
    /** The group's Turns mailbox, where claim records live beside key turns. */
    readonly mailbox: string,
    /** The turns connection: reads and removes records without unselecting the group. */
    private readonly connection: ImapConnection,
    private readonly consumer: string,
    private readonly log: Logger,
  ) {}

  /**
   * Records on `client` (the claim connection) that this claimer won `won` of `source`, and
   * returns those no earlier record names. Call it after the conditional STORE, before the MOVE.
   */
  async arbitrate(client: ImapFlow, source: ClaimSource, won: number[]): Promise<Arbitration> {
    const raw = recordText(source, won, this.consumer, new Date());
    const appended = await creatingMailbox(client, this.mailbox, () =>
      appendMessages(client, this.mailbox, [{ raw, flags: ['\\Seen'] }]),
    );
    const record = appended?.[0];
    if (record === undefined) {
      throw new MailbusError(
        ERROR_CODES.PROTOCOL,
        `the server did not say which UID it gave the claim record in ${this.mailbox} ` +
          '(APPENDUID, RFC 4315)',
      );
    }

    const status = await mailboxStatus(client, this.mailbox);
    if (status !== undefined && status.messages <= 1) {
      return { kept: won, record };
    }

    const earlier = await this.connection.run(
      { command: 'FETCH', mailbox: this.mailbox },
      (turns) => readClaims(turns, this.mailbox),
      null,
    );
    const taken = new Set<number>();
    for (const claim of earlier) {
      if (claim.uid < record && sameSource(claim.source, source)) {
        claim.uids.forEach((uid) => taken.add(uid));
      }
    }
    const kept = won.filter((uid) => !taken.has(uid));
    if (kept.length < won.length) {
      this.log.debug(
        { event: 'claim.arbitrated', won: won.length, kept: kept.length },
        'an earlier claim record named messages this claim had won too',
      );
    }
    return { kept, record };
  }

  /**
   * Removes a record once its claim's MOVE is done; in a batch, on the turns connection, without
   * holding up the claim. A record that cannot be removed now is swept later.
   */
  finished(record: number): void {
    this.done.push(record);
    this.flushing ??= this.flush().finally(() => (this.flushing = undefined));
  }

  /** Removes claim records older than `olderThanMs`: left by claimers that died mid-claim. */
  async sweep(olderThanMs: number): Promise<void> {
    const before = Date.now() - olderThanMs;
    await this.connection.run(
      { command: 'EXPUNGE', mailbox: this.mailbox },
      async (client) => {
        const stale = (await readClaims(client, this.mailbox)).filter(
          (claim) => claim.writtenMs < before,
        );
        if (stale.length > 0) {
          await deleteMessages(
            client,
            stale.map((claim) => claim.uid),
          );
          this.log.warn({ event: 'claim.record_stale', count: stale.length });
        }
      },
      null,
    );
  }

  /** Waits for the removals under way, so that a closing claimer leaves no record behind. */
  async settled(): Promise<void> {
    while (this.flushing) {
      await this.flushing;
    }
  }

  private async flush(): Promise<void> {
    while (this.done.length > 0) {
      const batch = this.done.splice(0);
      try {
        await this.connection.run(
          { command: 'EXPUNGE', mailbox: this.mailbox },
          async (client) => {
            // A session acts only on the UIDs it has been told of. With the mailbox selected
            // already, a NOOP tells it of the records appended since; a SELECT costs more.
            const selected = client.mailbox;
            if (selected && selected.path === this.mailbox && selected.readOnly === false) {
              await execute(client, 'NOOP', false);
            } else {
              await client.mailboxOpen(this.mailbox);
            }
            await deleteMessages(client, batch);
          },
          null,
        );
      } catch (err) {
        this.log.debug({ err: errorText(err), records: batch.length }, 'claim records left');
      }
    }
  }
}

interface ClaimRecord {
  uid: number;
  writtenMs: number;
  source: ClaimSource;
  uids: number[];
}

async function readClaims(client: ImapFlow, mailbox: string): Promise<ClaimRecord[]> {
  const fields = await readFields(client, mailbox, [CLAIM_SOURCE_HEADER, CLAIM_UIDS_HEADER]);
  const claims: ClaimRecord[] = [];
  for (const { uid, storedMs, fields: values } of fields) {
    const source = parseSource(values.get(CLAIM_SOURCE_HEADER.toLowerCase()));
    const uids = values.get(CLAIM_UIDS_HEADER.toLowerCase());
    if (source !== undefined && uids !== undefined) {
      const writtenMs = Number.isFinite(storedMs) ? storedMs : Date.now();
      claims.push({ uid, writtenMs, source, uids: parseUidSet(uids) });
    }
  }
  return claims;
}

// The source travels as "<uidvalidity> <mailbox>": the mailbox name may hold spaces.
function parseSource(text: string | undefined): ClaimSource | undefined {
  const match = text === undefined ? null : /^(\d+) (.+)$/.exec(text);
  if (!match) {
    return undefined;
  }
  return { uidValidity: BigInt(match[1] as string), path: match[2] as string };
}

function sameSource(a: ClaimSource, b: ClaimSource): boolean {
  return a.path === b.path && a.uidValidity === b.uidValidity;
}

/** A record, readable in a mail client: which consumer claimed which messages of which box. */
function recordText(source: ClaimSource, uids: number[], consumer: string, at: Date): Buffer {
  const unique = `${at.getTime()}.${randomBytes(4).toString('hex')}`;
  const lines = [
    `Date: ${at.toUTCString()}`,
    'From: mailbus <mailbus@turns.invalid>',
    `Subject: claim of ${uids.length} messages of ${source.path}`,
    `Message-ID: <claim.${unique}@mailbus.invalid>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    `${CLAIM_SOURCE_HEADER}: ${source.uidValidity} ${source.path}`,
    `${CLAIM_UIDS_HEADER}: ${formatUidSet(uids)}`,
    '',
    `Consumer ${consumer} is moving these messages of ${source.path} into its in-progress`,
    `mailbox (recorded at ${at.toISOString()}); this record goes once the move is done.`,
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'utf8');
}
