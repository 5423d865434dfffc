// One consumer's claimer on an IMAP group: claims on a connection that keeps the group mailbox
// selected (and IDLEs on it to hear of new mail), settles on a second connection that keeps
// the consumer's in-progress mailbox selected. Two connections, because IMAP acts on the
// selected mailbox: one connection would have to re-select between every claim and every ack.

import type { ImapFlow } from 'imapflow';
import type { ImapConfig } from '../../config/connection.js';
import { ERROR_CODES, LeaseLostError, MailbusError, errorText } from '../../errors.js';
import type { Logger } from '../../log.js';
import { checkName } from '../../names.js';
import type { Layout } from '../layout.js';
import type { Claim, Claimer, ReleaseOptions } from '../store.js';
import { CLAIM_KEYWORD, claimRound } from './claim.js';
import type { ClaimedMessage } from './claim.js';
import { expungeMessages, moveMessages, storeFlags } from './commands.js';
import { ImapConnection, REQUIRED_CAPABILITIES } from './connection.js';

/**
 * How many claim rounds one claim() may lose to other consumers before it gives up. Each lost
 * round still leaves the messages others took out of the next SEARCH, so a few rounds suffice;
 * the bound keeps one claim() call from spinning under heavy contention.
 */
export const MAX_CLAIM_ROUNDS = 8;

/** Separates the mailbox and the UID in a claim's location: `orders.default.In-Progress.w1#7`. */
const LOCATION_SEPARATOR = '#';

/** A claim of this store: where the message is, and what settling it needs to know. */
class ImapClaim implements Claim {
  constructor(
    readonly location: string,
    readonly raw: Buffer,
    readonly uid: number,
    readonly flagged: boolean,
  ) {}
}

export interface ImapClaimerOptions {
  config: ImapConfig;
  layout: Layout;
  topic: string;
  group: string;
  consumer: string;
  logger: Logger;
  /** Called once the claimer has closed, so the store can forget it. */
  onClose?: (claimer: ImapClaimer) => void;
}

export class ImapClaimer implements Claimer {
  private readonly groupMailbox: string;
  private readonly inProgress: string;
  private readonly archive: string;
  private readonly junk: string;
  private readonly claimConnection: ImapConnection;
  private readonly settleConnection: ImapConnection;
  private readonly log: Logger;

  // Set by new mail, a reconnect or a claim cut short; cleared when a claim starts. While set,
  // waitForMessages returns at once, so no notice of new mail is lost between two calls.
  private mailMaybeWaiting = true;
  private readonly wakers = new Set<() => void>();
  private closing: Promise<void> | undefined;
  private started = false;

  // Set when a claim moved messages into the in-progress mailbox. An IMAP session learns of
  // messages another session added only at a command boundary, and a UID FETCH, STORE or MOVE
  // of a UID it has not seen yet does nothing: so the settle connection syncs (NOOP) first.
  private settleViewStale = false;

  private constructor(private readonly options: ImapClaimerOptions) {
    const { config, layout, topic, group, consumer } = options;
    this.groupMailbox = layout.group(topic, group);
    this.inProgress = layout.inProgress(topic, group, checkName('group', consumer));
    this.archive = layout.archive(topic, group);
    this.junk = layout.junk(topic, group);
    this.log = options.logger.child({ topic, group, consumer });

    this.claimConnection = new ImapConnection(config, {
      role: 'claim',
      logger: this.log,
      capabilities: REQUIRED_CAPABILITIES.claim,
      mailbox: this.groupMailbox,
      idle: true,
      onConnect: () => this.wake(),
      onNewMail: () => this.wake(),
      onClose: () => this.wake(),
    });
    this.settleConnection = new ImapConnection(config, {
      role: 'settle',
      logger: this.log,
      capabilities: REQUIRED_CAPABILITIES.settle,
      condstore: false,
      mailbox: this.inProgress,
    });
  }

  /** Opens both connections; the store has made sure the group exists. */
  static async open(options: ImapClaimerOptions): Promise<ImapClaimer> {
    const claimer = new ImapClaimer(options);
    try {
      await claimer.start();
    } catch (err) {
      await claimer.close();
      throw err;
    }
    return claimer;
  }

  async claim(max: number): Promise<Claim[]> {
    this.checkOpen();
    if (!Number.isInteger(max) || max < 1) {
      return [];
    }

    return await this.claimConnection.run({ command: 'claim' }, async (client) => {
      this.mailMaybeWaiting = false;
      for (let round = 1; round <= MAX_CLAIM_ROUNDS; round += 1) {
        const result = await claimRound(client, max, this.inProgress, this.log);
        if (result.claimed.length > 0 || !result.contended) {
          this.settleViewStale ||= result.claimed.length > 0;
          return result.claimed.map((message) => this.toClaim(message));
        }
      }
      // Messages are still waiting; the next waitForMessages must not sleep on them.
      this.mailMaybeWaiting = true;
      this.log.debug({ rounds: MAX_CLAIM_ROUNDS }, 'every claim round lost to other consumers');
      return [];
    });
  }

  async waitForMessages(timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (this.closing || signal.aborted || this.mailMaybeWaiting) {
      return;
    }
    // IDLE only runs on a live connection: reconnect now rather than sleep deaf.
    if (!this.claimConnection.usable) {
      try {
        await this.claimConnection.open();
      } catch (err) {
        this.log.debug({ err: errorText(err) }, 'claim connection still down while waiting');
      }
      if (this.mailMaybeWaiting) {
        return;
      }
    }

    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener('abort', done, { once: true });
      this.wakers.add(done);
    });
  }

  async ack(claims: Claim[]): Promise<void> {
    this.checkOpen();
    if (claims.length === 0) {
      return;
    }
    const uids = claims.map((claim) => this.uidOf(claim));

    await this.settle('UID MOVE', async (client) => {
      await storeFlags(client, uids, 'add', ['\\Seen']);
      const moved = await moveMessages(client, uids, this.archive);
      this.checkAllMoved(uids, moved, 'ack');
    });
  }

  async release(claim: Claim, options: ReleaseOptions = {}): Promise<void> {
    this.checkOpen();
    const uid = this.uidOf(claim);
    const raw = options.raw;

    await this.settle('release', async (client) => {
      if (raw === undefined) {
        await storeFlags(client, [uid], 'remove', [CLAIM_KEYWORD]);
        const moved = await moveMessages(client, [uid], this.groupMailbox);
        this.checkAllMoved([uid], moved, 'release');
        return;
      }
      // The new copy first: a crash in between leaves a duplicate, never a lost message.
      const flagged = await this.heldFlagged(client, claim, uid);
      await client.append(this.groupMailbox, raw, flagged ? ['\\Flagged'] : []);
      await this.remove(client, uid);
    });
  }

  async deadLetter(claim: Claim, raw: Buffer): Promise<void> {
    this.checkOpen();
    const uid = this.uidOf(claim);

    await this.settle('dead letter', async (client) => {
      await this.heldFlagged(client, claim, uid);
      await client.append(this.junk, raw);
      await this.remove(client, uid);
    });
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async start(): Promise<void> {
    // In-progress mailboxes are per consumer: created when its claimer opens, removed (when
    // empty) when it closes.
    await this.settleConnection.run(
      { command: 'CREATE', mailbox: this.inProgress },
      async (client) => {
        await client.mailboxCreate(this.inProgress);
      },
      null,
    );
    this.started = true;
    await this.claimConnection.open();
    await this.settleConnection.open();
  }

  // Ordered cleanup, each step guarded: wake waiters, remove the empty in-progress mailbox,
  // log out both connections.
  private async shutdown(): Promise<void> {
    this.wake();
    if (this.started) {
      try {
        await this.removeInProgressIfEmpty();
      } catch (err) {
        this.log.debug({ err: errorText(err) }, 'could not remove the in-progress mailbox');
      }
    }
    await this.claimConnection.close();
    await this.settleConnection.close();
    this.options.onClose?.(this);
  }

  private async removeInProgressIfEmpty(): Promise<void> {
    await this.settleConnection.run(
      { command: 'DELETE', mailbox: this.inProgress },
      async (client) => {
        // Unselect first: a server may refuse to delete the selected mailbox.
        await client.mailboxClose();
        const status = await client.status(this.inProgress, { messages: true });
        if (status && status.messages === 0) {
          await client.mailboxDelete(this.inProgress);
        }
      },
      null,
    );
  }

  // Runs a settle task on the in-progress mailbox, with a view that includes every claim.
  private async settle(command: string, task: (client: ImapFlow) => Promise<void>): Promise<void> {
    await this.settleConnection.run({ command, mailbox: this.inProgress }, async (client) => {
      if (this.settleViewStale) {
        this.settleViewStale = false;
        await client.noop();
      }
      await task(client);
    });
  }

  private toClaim(message: ClaimedMessage): ImapClaim {
    return new ImapClaim(this.locationOf(message.uid), message.raw, message.uid, message.flagged);
  }

  private locationOf(uid: number): string {
    return `${this.inProgress}${LOCATION_SEPARATOR}${uid}`;
  }

  // The UID of a claim in this consumer's in-progress mailbox; refuses claims of others.
  private uidOf(claim: Claim): number {
    if (claim instanceof ImapClaim) {
      if (claim.location.startsWith(this.inProgress + LOCATION_SEPARATOR)) {
        return claim.uid;
      }
    } else {
      const at = claim.location.lastIndexOf(LOCATION_SEPARATOR);
      const uid = Number(claim.location.slice(at + 1));
      if (claim.location.slice(0, at) === this.inProgress && Number.isSafeInteger(uid) && uid > 0) {
        return uid;
      }
    }
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `claim ${claim.location} does not belong to consumer "${this.options.consumer}" of ` +
        `${this.groupMailbox}: settle a claim with the claimer that made it`,
    );
  }

  // Whether the held copy is \Flagged; fails with ELEASELOST when it is no longer held.
  private async heldFlagged(client: ImapFlow, claim: Claim, uid: number): Promise<boolean> {
    const held = await client.fetchAll(String(uid), { uid: true, flags: true }, { uid: true });
    const message = held.find((candidate) => candidate.uid === uid);
    if (!message) {
      throw this.leaseLost([uid], 'settle');
    }
    if (claim instanceof ImapClaim) {
      return claim.flagged;
    }
    return message.flags?.has('\\Flagged') ?? false;
  }

  private async remove(client: ImapFlow, uid: number): Promise<void> {
    await storeFlags(client, [uid], 'add', ['\\Deleted']);
    await expungeMessages(client, [uid]);
  }

  private checkAllMoved(uids: number[], moved: Map<number, number>, action: string): void {
    const missing = uids.filter((uid) => !moved.has(uid));
    if (missing.length > 0) {
      throw this.leaseLost(missing, action);
    }
  }

  // Names the claims lost, so that a batch ack can settle the others (see ack-batch.ts).
  private leaseLost(uids: number[], action: string): LeaseLostError {
    return new LeaseLostError(
      `cannot ${action} UID ${uids.join(',')} of ${this.inProgress}: ` +
        'this consumer no longer holds the message',
      uids.map((uid) => this.locationOf(uid)),
    );
  }

  private wake(): void {
    this.mailMaybeWaiting = true;
    for (const waker of [...this.wakers]) {
      waker();
    }
  }

  private checkOpen(): void {
    if (this.closing) {
      throw new MailbusError(
        ERROR_CODES.CLOSED,
        `the claimer of consumer "${this.options.consumer}" on ${this.groupMailbox} is closed`,
      );
    }
  }
}
