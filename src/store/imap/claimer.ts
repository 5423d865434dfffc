// One consumer's claimer on an IMAP group: claims on a connection that keeps the group mailbox
// selected (and IDLEs on it to hear of new mail), settles on a second connection that keeps
// the consumer's in-progress mailbox selected. Two connections, because IMAP acts on the
// selected mailbox: one connection would have to re-select between every claim and every ack.
//
// Besides claiming and settling, a claimer
// - promotes due scheduled messages into the group just before it claims (promote.ts), on the
//   claim connection, and never sleeps in waitForMessages past the next one's due time;
// - heartbeats, with one APPEND to the group's Consumers mailbox on the settle connection, once
//   when it opens (before its in-progress mailbox exists) and whenever heartbeat() is called;
// - recovers, when recover() is called: takes over the in-progress mailboxes of consumers that
//   stopped heartbeating (lease.ts) and adopts messages of its own in-progress mailbox that it
//   handed out to nobody (a claim whose MOVE succeeded but whose answer was lost, or the
//   leftovers of a previous process with the same consumer id), on the settle connection; and
//   frees messages stranded with a claim or promote keyword (stranded.ts), on the claim one;
// - hands out the messages of one ordering key one at a time (turns.ts), keeping the turns in
//   the group's Turns mailbox on a third connection, opened only once a key is seen;
// - confirms what each conditional STORE won with a claim record in that same mailbox, read
//   and removed on the third connection (arbiter.ts).
//
// A settle (ack, release, dead letter) that loses its connection is tried again once the
// connection is back, and takes a message already gone from the in-progress mailbox as settled
// by the attempt whose answer was lost: an outage of the server does not leave a handled
// message stranded in flight (see settle()).
//
// A claim names its in-progress mailbox's UIDVALIDITY (from the COPYUID of its MOVE). If the
// mailbox was taken over and recreated meanwhile, a UID there may name another message: a
// settle then fails with ELEASELOST instead of acking a stranger. The group mailbox may be
// deleted and recreated under a running claimer too: Dovecot then either disconnects the claim
// connection, which reconnects and selects the new mailbox on the next claim, or leaves it
// looking at the old, empty one, which a claimer that keeps finding nothing notices by
// selecting the group again every GROUP_RESELECT_INTERVAL_MS. Nothing of the claimer's state
// is tied to the group's UIDs except the stranded watch, which keys its sightings by
// UIDVALIDITY; the claims it holds are in its in-progress mailbox and settle as before.

import { setTimeout as sleep } from 'node:timers/promises';
import type { ImapFlow } from 'imapflow';
import type { ImapConfig } from '../../config/connection.js';
import {
  ERROR_CODES,
  LeaseLostError,
  MailbusError,
  errorText,
  isMailbusError,
} from '../../errors.js';
import type { Logger } from '../../log.js';
import { keyDigest, orderingOf } from '../../message/ordering.js';
import { checkName } from '../../names.js';
import { quarantineFields, quarantinedCopy } from '../../security/quarantine.js';
import type { QuarantineVerdict } from '../../security/quarantine.js';
import type { Layout } from '../layout.js';
import type { Claim, Claimer, ReleaseOptions } from '../store.js';
import { CLAIM_KEYWORD, claimRound } from './claim.js';
import type { ClaimedMessage } from './claim.js';
import {
  appendCatenated,
  creatingMailbox,
  deleteMessages,
  fetchClaimTexts,
  formatUidSet,
  isMissingMailbox,
  listMailboxes,
  mailboxStatus,
  moveMessages,
  searchAllUids,
  storeFlags,
} from './commands.js';
import { ImapConnection, REQUIRED_CAPABILITIES } from './connection.js';
import {
  LeaseJudge,
  TAKEOVER_BATCH_MAX_MESSAGES,
  consumersMailbox,
  drainTomb,
  heartbeatMessage,
  newestHeartbeats,
  parseHolder,
  readHeartbeats,
  tombMailbox,
} from './lease.js';
import type { Holder } from './lease.js';
import { PROMOTE_KEYWORD, ScheduledPromoter } from './promote.js';
import { scheduledCopy } from './schedule.js';
import { StrandedWatch } from './stranded.js';
import { ClaimArbiter } from './arbiter.js';
import { ImapTurns } from './turns.js';
import type { TurnClaim } from './turns.js';
import { WaitingWindow } from './window.js';

/**
 * How many claim rounds one claim() may lose to other consumers before it gives up. Each lost
 * round still leaves the messages others took out of the next SEARCH, so a few rounds suffice;
 * the bound keeps one claim() call from spinning under heavy contention.
 */
export const MAX_CLAIM_ROUNDS = 8;

/**
 * The UIDs of its own heartbeats a claimer remembers, to delete them when it closes. Older ones
 * are expunged by recover() long before; the bound keeps a long-lived claimer's list small.
 */
export const HEARTBEAT_UIDS_KEPT = 16;

/**
 * How often a claimer that finds nothing selects the group mailbox again. Dovecot does not
 * always tell a session that its selected mailbox was deleted and recreated (it did when the
 * session was IDLE and the mailbox had no children; otherwise the session went on seeing the
 * old, empty mailbox, and even STATUS on it answered from that view), so a claimer that keeps
 * finding nothing makes sure now and then that it looks at the mailbox of that name. One SELECT
 * per 5 s of idle claiming; a busy claimer never pays it.
 */
export const GROUP_RESELECT_INTERVAL_MS = 5_000;

/**
 * How soon a claimer looks again when messages were waiting but their keys' turns were held by
 * other consumers: no mail arrives to say that a turn has ended.
 */
export const TURN_RECHECK_MS = 250;

/**
 * The pause before a settle that lost its connection is tried again, doubling up to the
 * maximum; the connection's own reconnect backoff comes on top while the server is down.
 */
export const SETTLE_RETRY_MIN_PAUSE_MS = 100;
export const SETTLE_RETRY_MAX_PAUSE_MS = 5_000;

/**
 * How long a settle keeps trying to get its connection back: a default lease. After an outage
 * that long, other consumers may have taken the claims over; when none could, the claims are
 * adopted again by this claimer's next recover() (see settle()).
 */
export const SETTLE_RETRY_WINDOW_MS = 30_000;

/**
 * How long after a claim last found messages a waiting claimer polls the server with NOOP
 * instead of waiting on IDLE, and how often. Dovecot tells an IDLE session of new mail about
 * 500 ms after it arrives, and a NOOP at once: polling keeps the latency of a busy queue to
 * about the interval, and stops a second after the queue went quiet, so a quiet queue costs
 * the server one IDLE session and at most 100 NOOPs after each burst.
 */
export const ACTIVE_POLL_WINDOW_MS = 1_000;
export const ACTIVE_POLL_INTERVAL_MS = 10;

/** Separates the mailbox and the UID in a claim's location: `orders.default.In-Progress.w1#7`. */
const LOCATION_SEPARATOR = '#';

// LIST flags of names that are not mailboxes of their own (a parent that only has children).
const NOT_A_MAILBOX = ['\\noselect', '\\nonexistent'];

/** A claim of this store: where the message is, and what settling it needs to know. */
class ImapClaim implements Claim {
  constructor(
    readonly location: string,
    readonly raw: Buffer,
    readonly size: number,
    readonly oversized: boolean,
    readonly uid: number,
    readonly flagged: boolean,
    /** The in-progress mailbox's UIDVALIDITY the UID belongs to, when the server said. */
    readonly uidValidity: bigint | undefined,
  ) {}

  /** The key turn this message holds, if it has an ordering key. */
  get turn(): TurnClaim | undefined {
    const ordering = orderingOf(this.raw);
    return ordering && { keyDigest: keyDigest(ordering.key), messageId: ordering.messageId };
  }
}

export interface ImapClaimerOptions {
  config: ImapConfig;
  layout: Layout;
  topic: string;
  group: string;
  consumer: string;
  logger: Logger;
  /** Messages larger than this are claimed unread (see ClaimerOptions). */
  maxMessageBytes?: number;
  /** Called once the claimer has closed, so the store can forget it. */
  onClose?: (claimer: ImapClaimer) => void;
}

export class ImapClaimer implements Claimer {
  private readonly groupMailbox: string;
  private readonly scheduled: string;
  private readonly consumers: string;
  private readonly inProgress: string;
  private readonly archive: string;
  private readonly junk: string;
  private readonly quarantined: string;
  private readonly claimConnection: ImapConnection;
  private readonly settleConnection: ImapConnection;
  private readonly turns: ImapTurns;
  private readonly arbiter: ClaimArbiter;
  private readonly log: Logger;
  private readonly promoter: ScheduledPromoter;
  private readonly stranded: StrandedWatch;
  private readonly judge = new LeaseJudge();
  private readonly window = new WaitingWindow();

  // Set by new mail, a reconnect or a claim cut short; cleared when a claim starts. While set,
  // waitForMessages returns at once, so no notice of new mail is lost between two calls.
  private mailMaybeWaiting = true;
  // Set when a claim passed over messages whose keys' turns others held: look again by then.
  private turnRecheckAtMs: number | undefined;
  private readonly wakers = new Set<() => void>();
  // When a claim last found messages: for a while after it, waiting polls instead of IDLEs.
  private lastActivityMs = 0;
  // The poll of the wait in progress; a new wait or a claim replaces it, which ends the old one.
  private poll: object | undefined;
  private closing: Promise<void> | undefined;
  // Aborted by close(): a settle waiting to try again gives up at once.
  private readonly closeSignal = new AbortController();
  private started = false;

  // Set when a heartbeat failed (its connection was lost), cleared by one that succeeds. Until
  // then other consumers may judge this one dead and take its in-progress mailbox over: claim()
  // heartbeats first, so that it does not claim messages into a mailbox about to be taken.
  private heartbeatOwed = false;
  // When the settle connection, which heartbeats and recovers, last came up (see LeaseJudge).
  private settleConnectedAtMs = 0;

  // Set when a claim moved messages into the in-progress mailbox. An IMAP session learns of
  // messages another session added only at a command boundary, and a UID FETCH, STORE or MOVE
  // of a UID it has not seen yet does nothing: so the settle connection syncs (NOOP) first.
  private settleViewStale = false;

  // The claims handed out and not settled, as `<uidValidity>:<uid>`: what recover() must not
  // adopt as orphans. claimsRunning counts claim() calls in flight, whose MOVEs may have landed
  // in the in-progress mailbox before their claims are recorded here.
  private readonly held = new Set<string>();
  private claimsRunning = 0;

  private groupUidValidity: bigint | undefined;
  private groupSelectedAtMs = Date.now();
  private heartbeats: { uidValidity: bigint | undefined; uids: number[] } = {
    uidValidity: undefined,
    uids: [],
  };

  private constructor(private readonly options: ImapClaimerOptions) {
    const { config, layout, topic, group, consumer } = options;
    this.groupMailbox = layout.group(topic, group);
    this.scheduled = layout.scheduled(topic, group);
    this.consumers = consumersMailbox(layout, topic, group);
    this.inProgress = layout.inProgress(topic, group, checkName('group', consumer));
    this.archive = layout.archive(topic, group);
    this.junk = layout.junk(topic, group);
    this.quarantined = layout.quarantine(topic, group);
    this.log = options.logger.child({ topic, group, consumer });
    this.stranded = new StrandedWatch(this.log);

    this.claimConnection = new ImapConnection(config, {
      role: 'claim',
      logger: this.log,
      capabilities: REQUIRED_CAPABILITIES.claim,
      mailbox: this.groupMailbox,
      idle: true,
      onConnect: (client) => this.watchGroup(client),
      onNewMail: () => this.wake(),
      onClose: () => this.wake(),
    });
    this.settleConnection = new ImapConnection(config, {
      role: 'settle',
      logger: this.log,
      capabilities: REQUIRED_CAPABILITIES.settle,
      condstore: false,
      mailbox: this.inProgress,
      keepAlive: true,
      onConnect: () => this.noteSettleConnected(),
    });
    const turnsConnection = new ImapConnection(config, {
      role: 'turns',
      logger: this.log,
      capabilities: REQUIRED_CAPABILITIES.settle,
      condstore: false,
    });
    const turnsMailbox = layout.turns(topic, group);
    this.turns = new ImapTurns(turnsMailbox, turnsConnection, consumer, this.log);
    this.arbiter = new ClaimArbiter(turnsMailbox, turnsConnection, consumer, this.log);
    this.promoter = new ScheduledPromoter(
      this.scheduled,
      this.groupMailbox,
      this.log,
      this.arbiter,
    );
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
    if (this.heartbeatOwed) {
      await this.heartbeat();
    }

    this.claimsRunning += 1;
    try {
      return await this.claimConnection.run({ command: 'claim' }, async (client) => {
        this.mailMaybeWaiting = false;
        this.poll = undefined;
        this.noticeGroupUidValidity(client);
        if (this.promoter.wanted(Date.now())) {
          await this.promoter.promote(client);
        }

        for (let round = 1; round <= MAX_CLAIM_ROUNDS; round += 1) {
          const result = await claimRound(
            client,
            max,
            this.inProgress,
            this.log,
            this.turns,
            this.arbiter,
            this.window,
            this.options.maxMessageBytes,
          );
          if (result.deferred) {
            this.turnRecheckAtMs = Date.now() + TURN_RECHECK_MS;
          }
          if (result.claimed.length === 0 && !result.contended && (await this.reselected(client))) {
            continue;
          }
          if (result.claimed.length > 0 || !result.contended) {
            this.settleViewStale ||= result.claimed.length > 0;
            if (result.claimed.length > 0) {
              this.lastActivityMs = Date.now();
            }
            return result.claimed.map((message) => this.toClaim(message));
          }
        }
        // Messages are still waiting; the next waitForMessages must not sleep on them.
        this.mailMaybeWaiting = true;
        this.log.debug({ rounds: MAX_CLAIM_ROUNDS }, 'every claim round lost to other consumers');
        return [];
      });
    } finally {
      this.claimsRunning -= 1;
    }
  }

  async waitForMessages(timeoutMs: number, signal: AbortSignal): Promise<void> {
    // A scheduled message falls due: the next claim promotes it, so do not sleep past its time.
    const nextDueMs = Math.min(
      this.promoter.nextDueMs ?? Infinity,
      this.turnRecheckAtMs ?? Infinity,
    );
    this.turnRecheckAtMs = undefined;
    const dueInMs = nextDueMs - Date.now();
    if (this.closing || signal.aborted || this.mailMaybeWaiting || dueInMs <= 0) {
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

    const waitMs = Math.min(timeoutMs, dueInMs);
    const pollUntilMs = this.lastActivityMs + ACTIVE_POLL_WINDOW_MS;
    if (Date.now() < pollUntilMs) {
      await this.pollForMail(Math.min(Date.now() + waitMs, pollUntilMs), signal);
      return;
    }
    await this.sleep(waitMs, signal);
  }

  /**
   * A publish to `topic` through the same store has completed: wake now, and poll for a while,
   * as after a claim that found messages (the hint costs nothing when it is wrong).
   */
  notePublished(topic: string): void {
    if (topic !== this.options.topic || this.closing) {
      return;
    }
    this.lastActivityMs = Date.now();
    this.wake();
  }

  /**
   * Asks the server for news with a NOOP every ACTIVE_POLL_INTERVAL_MS until mail is reported,
   * `untilMs` passes, or another wait or a claim takes over. An IDLE session is told of new
   * mail only when the server gets round to it (Dovecot: half a second later, every time),
   * while a NOOP makes the server look at once: so a queue that has just been busy is polled
   * for a short while, and a quiet one costs the server nothing but IDLE.
   */
  private async pollForMail(untilMs: number, signal: AbortSignal): Promise<void> {
    const poll = {};
    this.poll = poll;
    while (this.poll === poll && !this.mailMaybeWaiting && !this.closing && !signal.aborted) {
      const leftMs = untilMs - Date.now();
      if (leftMs <= 0) {
        return;
      }
      await this.sleep(Math.min(ACTIVE_POLL_INTERVAL_MS, leftMs), signal);
      if (this.poll !== poll || this.mailMaybeWaiting || this.closing || signal.aborted) {
        return;
      }
      try {
        // New mail comes back as an EXISTS response, which wakes this claimer.
        await this.claimConnection.run({ command: 'NOOP' }, (client) => client.noop());
      } catch (err) {
        this.log.debug({ err: errorText(err) }, 'NOOP while waiting for mail failed');
        return; // the next claim reconnects
      }
    }
  }

  private sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
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

    // What this ack settled, also by an attempt that a lost connection cut short: their turns end.
    const acked = new Set<number>();

    try {
      await this.settle('ack', claims, uids, async (client, foreign, retry) => {
        const mine = uids.filter((uid) => !foreign.includes(uid));
        // Tried again after a lost connection: what is gone was moved by the attempt before.
        const due = retry ? await this.stillHeld(client, mine) : mine;
        mine.filter((uid) => !due.includes(uid)).forEach((uid) => acked.add(uid));
        let moved = new Map<number, number>();
        if (due.length > 0) {
          await storeFlags(client, due, 'add', ['\\Seen']);
          const transfer = await creatingMailbox(client, this.archive, () =>
            moveMessages(client, due, this.archive),
          );
          moved = transfer.targets;
        }
        moved.forEach((_target, uid) => acked.add(uid));
        this.checkAllMoved([...foreign, ...due], moved, 'ack');
      });
    } finally {
      // Only the turns of messages acked here: a lost one is another consumer's to settle.
      await this.endTurns(claims.filter((_claim, i) => acked.has(uids[i] as number)));
    }
  }

  async release(claim: Claim, options: ReleaseOptions = {}): Promise<void> {
    this.checkOpen();
    const uid = this.uidOf(claim);
    const { raw, notBefore } = options;
    const later = notBefore !== undefined && notBefore.getTime() > Date.now();

    await this.settle('release', [claim], [uid], async (client, foreign, retry) => {
      if (foreign.length > 0) {
        throw this.leaseLost(foreign, 'release');
      }
      const held = await this.heldCopy(client, claim, uid, retry, 'release');
      if (held === 'settled') {
        return;
      }
      if (held.deleted) {
        // An attempt cut short after it stored the new copy: only the removal is left.
        await this.remove(client, uid);
        return;
      }
      if (raw === undefined && !later) {
        await storeFlags(client, [uid], 'remove', [CLAIM_KEYWORD]);
        const moved = await creatingMailbox(client, this.groupMailbox, () =>
          moveMessages(client, [uid], this.groupMailbox),
        );
        this.checkAllMoved([uid], moved.targets, 'release');
        return;
      }
      // A new copy, in the group or (to wait for its time) in Scheduled dated when it falls due;
      // the copy first: a crash in between leaves a duplicate, never a lost message.
      const text = raw ?? claim.raw;
      const copy = later ? scheduledCopy(text, notBefore) : { raw: text, internalDate: undefined };
      const target = later ? this.scheduled : this.groupMailbox;
      await creatingMailbox(client, target, () =>
        client.append(target, copy.raw, held.flagged ? ['\\Flagged'] : [], copy.internalDate),
      );
      await this.remove(client, uid);
    });
  }

  async deadLetter(claim: Claim, raw: Buffer): Promise<void> {
    await this.replaceInto(claim, this.junk, 'dead letter', (client) =>
      client.append(this.junk, raw),
    );
  }

  /**
   * An oversized claim never passes through this process: with CATENATE (RFC 4469) the server
   * builds the quarantine copy from our two fields and the claimed message itself; a server
   * without it has the message moved there unchanged, its reason only in the worker's log.
   */
  async quarantine(claim: Claim, verdict: QuarantineVerdict): Promise<void> {
    if (!claim.oversized) {
      const raw = quarantinedCopy(claim.raw, verdict);
      await this.replaceInto(claim, this.quarantined, 'quarantine', (client) =>
        client.append(this.quarantined, raw),
      );
      return;
    }
    const uid = this.uidOf(claim);
    await this.replaceInto(claim, this.quarantined, 'quarantine', async (client) => {
      if (client.capabilities.has('CATENATE')) {
        await appendCatenated(client, this.quarantined, quarantineFields(verdict), {
          mailbox: this.inProgress,
          uidValidity: client.mailbox ? client.mailbox.uidValidity : undefined,
          uid,
        });
        return;
      }
      const moved = await moveMessages(client, [uid], this.quarantined);
      this.checkAllMoved([uid], moved.targets, 'quarantine');
      this.log.warn(
        { event: 'quarantine.unmarked', uid, reason: verdict.reason },
        'the server has no CATENATE: the oversized message was quarantined without its reason',
      );
    });
  }

  /**
   * Stores a new copy in `mailbox` with `store`, then removes the claimed message: a crash
   * duplicates, never loses.
   */
  private async replaceInto(
    claim: Claim,
    mailbox: string,
    action: string,
    store: (client: ImapFlow) => Promise<unknown>,
  ) {
    this.checkOpen();
    const uid = this.uidOf(claim);

    await this.settle(action, [claim], [uid], async (client, foreign, retry) => {
      if (foreign.length > 0) {
        throw this.leaseLost(foreign, action);
      }
      const held = await this.heldCopy(client, claim, uid, retry, action);
      if (held === 'settled') {
        return;
      }
      // A held copy marked deleted was stored there by an attempt cut short before its EXPUNGE.
      if (!held.deleted) {
        await creatingMailbox(client, mailbox, () => store(client));
      }
      await this.remove(client, uid);
    });
    await this.endTurns([claim]);
  }

  /**
   * Ends the key turns of settled messages, so that the next message of each key may go. A
   * failure here leaves a record naming a settled message, which recover() sweeps away.
   */
  private async endTurns(claims: Claim[]): Promise<void> {
    const turns = claims.flatMap((claim) => {
      const turn = claim instanceof ImapClaim ? claim.turn : undefined;
      return turn === undefined ? [] : [turn];
    });
    if (turns.length === 0) {
      return;
    }
    try {
      await this.turns.end(turns);
    } catch (err) {
      this.log.warn({ event: 'turn.end_failed', err: errorText(err) });
    }
    this.wake(); // this consumer's own next message of the key may be waiting
  }

  async heartbeat(): Promise<void> {
    this.checkOpen();
    const at = new Date();
    const { topic, group, consumer } = this.options;
    const raw = heartbeatMessage(consumer, topic, group, at);

    try {
      await this.appendHeartbeat(raw, at);
      this.heartbeatOwed = false;
    } catch (err) {
      this.heartbeatOwed = true;
      throw err;
    }
  }

  // No mailbox selected for it (null): APPEND needs none, and the in-progress mailbox may not
  // exist yet (the first heartbeat comes before it) or any more (taken over).
  private async appendHeartbeat(raw: Buffer, at: Date): Promise<void> {
    await this.settleConnection.run(
      { command: 'APPEND', mailbox: this.consumers },
      async (client) => {
        const appended = await creatingMailbox(client, this.consumers, () =>
          client.append(this.consumers, raw, ['\\Seen'], at),
        );
        if (appended && appended.uid !== undefined) {
          this.rememberHeartbeat(appended.uid, appended.uidValidity);
        }
      },
      null,
    );
  }

  async recover(leaseMs: number): Promise<Claim[]> {
    this.checkOpen();
    if (!Number.isFinite(leaseMs) || leaseMs <= 0) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        `recover() needs a lease of a positive number of milliseconds, not ${leaseMs}`,
      );
    }

    const claims = await this.settleConnection.run(
      { command: 'recover' },
      (client) => this.takeOver(client, leaseMs),
      null,
    );
    await this.claimConnection.run({ command: 'recover' }, (client) =>
      this.freeStranded(client, leaseMs),
    );
    try {
      await this.arbiter.sweep(leaseMs);
      await this.turns.sweep(leaseMs, () => this.unsettledMailboxes());
    } catch (err) {
      // Housekeeping: a stale record only delays its messages or key until the next sweep.
      this.log.warn({ event: 'turn.sweep_failed', err: errorText(err) });
    }
    return claims;
  }

  /** Where the group's unsettled messages are: the group, Scheduled, every in-progress box. */
  private async unsettledMailboxes(): Promise<string[]> {
    const holders = await this.settleConnection.run(
      { command: 'LIST' },
      (client) => this.listHolders(client),
      null,
    );
    return [this.groupMailbox, this.scheduled, ...holders.map((holder) => holder.mailbox)];
  }

  close(): Promise<void> {
    this.closeSignal.abort();
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async start(): Promise<void> {
    // A heartbeat before the in-progress mailbox exists: a recoverer that sees the mailbox then
    // also sees that its consumer is alive (lease.ts).
    await this.heartbeat();
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

  // Ordered cleanup, each step guarded: wake waiters, remove the empty in-progress mailbox and
  // then this consumer's heartbeats, log out both connections. Without a settle connection the
  // cleanup is left to the other consumers (they take the empty mailbox over once this
  // consumer's heartbeats are a lease old): reconnecting could hold a stopping worker for long.
  private async shutdown(): Promise<void> {
    this.wake();
    if (this.started && this.settleConnection.usable) {
      try {
        if (await this.removeInProgressIfEmpty()) {
          await this.removeHeartbeats();
        }
      } catch (err) {
        this.log.debug({ err: errorText(err) }, 'could not remove the in-progress mailbox');
      }
    }
    await this.claimConnection.close();
    await this.settleConnection.close();
    await this.arbiter.settled();
    await this.turns.close();
    this.options.onClose?.(this);
  }

  private async removeInProgressIfEmpty(): Promise<boolean> {
    return await this.settleConnection.run(
      { command: 'DELETE', mailbox: this.inProgress },
      async (client) => {
        // Unselect first: a server may refuse to delete the selected mailbox.
        await client.mailboxClose();
        const status = await mailboxStatus(client, this.inProgress);
        if (status && status.messages === 0) {
          await client.mailboxDelete(this.inProgress);
        }
        return status === undefined || status.messages === 0;
      },
      null,
    );
  }

  // A consumer that closed cleanly holds nothing: its heartbeats would only say, for a lease,
  // that it is alive.
  private async removeHeartbeats(): Promise<void> {
    const { uidValidity, uids } = this.heartbeats;
    if (uids.length === 0) {
      return;
    }
    await this.settleConnection.run(
      { command: 'UID EXPUNGE', mailbox: this.consumers },
      async (client) => {
        await client.mailboxOpen(this.consumers);
        // A recreated Consumers mailbox reuses UIDs for other consumers' heartbeats.
        if (client.mailbox && client.mailbox.uidValidity === uidValidity) {
          await deleteMessages(client, uids);
        }
      },
      null,
    );
  }

  // Takes over the in-progress mailboxes of dead consumers and adopts this consumer's orphans;
  // runs on the settle connection, which it leaves with the in-progress mailbox selected.
  private async takeOver(client: ImapFlow, leaseMs: number): Promise<ImapClaim[]> {
    const nowMs = Date.now();
    const me = this.options.consumer;
    const holders = await this.listHolders(client);
    const heartbeats = await readHeartbeats(client, this.consumers);
    const newest = newestHeartbeats(heartbeats);
    const others = new Set([...holders.map((holder) => holder.owner), ...newest.keys()]);
    others.delete(me);
    const dead = this.judge.dead(others, newest, leaseMs, nowMs, this.settleConnectedAtMs);

    // While Consumers is selected: expunge superseded heartbeats, and all of the dead. A dead
    // consumer whose mailbox the takeover below then misses (another recoverer won it) has
    // lost nothing: that recoverer takes it over.
    const expired = heartbeats.filter(
      (heartbeat) =>
        newest.get(heartbeat.consumer)?.uid !== heartbeat.uid || dead.has(heartbeat.consumer),
    );
    await deleteMessages(
      client,
      expired.map((heartbeat) => heartbeat.uid),
    );

    const taken: ImapClaim[] = [];
    for (const holder of holders) {
      const mine = holder.owner === me;
      if (mine ? !holder.tomb : !dead.has(holder.owner)) {
        continue;
      }
      // A tomb of our own is one a previous recover() did not finish.
      const tomb = mine ? holder.mailbox : await this.renameToTomb(client, holder);
      if (tomb === undefined) {
        continue;
      }
      const messages = await drainTomb(client, tomb, this.inProgress, this.options.maxMessageBytes);
      this.log.info(
        {
          event: 'lease.takeover',
          dead: holder.consumer,
          from: holder.mailbox,
          count: messages.length,
        },
        `took over ${messages.length} claims of consumer ${holder.consumer}`,
      );
      taken.push(...messages.map((message) => this.toClaim(message)));
    }
    if (taken.length > 0) {
      this.settleViewStale = true;
    }

    return [...taken, ...(await this.adoptOrphans(client))];
  }

  // The exclusive step of a takeover: RENAME succeeds for one recoverer only.
  private async renameToTomb(client: ImapFlow, holder: Holder): Promise<string | undefined> {
    const { layout, topic, group, consumer } = this.options;
    const tomb = tombMailbox(layout, topic, group, holder.consumer, consumer);
    try {
      await client.mailboxRename(holder.mailbox, tomb);
      return tomb;
    } catch (err) {
      if ((err as { responseStatus?: string }).responseStatus !== 'NO') {
        throw err;
      }
      this.log.debug({ mailbox: holder.mailbox, err: errorText(err) }, 'another consumer took it');
      return undefined;
    }
  }

  // Messages of our own in-progress mailbox that no claim handed out names, for a whole look
  // during which no claim() ran: a claim whose MOVE landed but whose answer was lost, or what a
  // previous process with this consumer id left behind. They are returned like taken-over claims.
  private async adoptOrphans(client: ImapFlow): Promise<ImapClaim[]> {
    try {
      await client.mailboxOpen(this.inProgress);
    } catch (err) {
      if (isMissingMailbox(err)) {
        return [];
      }
      throw err;
    }
    this.settleViewStale = false;
    const mailbox = client.mailbox;
    if (!mailbox || mailbox.exists === 0 || this.claimsRunning > 0) {
      return [];
    }
    const present = await searchAllUids(client, ['UNDELETED']);
    // A claim() that started meanwhile may have moved some of these in: its claims are not
    // recorded yet, so leave everything for the next look.
    if (this.claimsRunning > 0) {
      return [];
    }
    const orphans = present
      .filter((uid) => !this.isHeld(mailbox.uidValidity, uid))
      .slice(0, TAKEOVER_BATCH_MAX_MESSAGES);
    if (orphans.length === 0) {
      return [];
    }

    const states = await client.fetchAll(
      formatUidSet(orphans),
      { uid: true, flags: true, size: true },
      { uid: true },
    );
    const sizes = new Map<number, number>();
    for (const state of states) {
      if (state.size !== undefined) {
        sizes.set(state.uid, state.size);
      }
    }
    const texts = await fetchClaimTexts(client, orphans, this.options.maxMessageBytes, sizes);
    const adopted = states.flatMap((state) => {
      const text = texts.get(state.uid);
      if (text === undefined) {
        return [];
      }
      const flagged = state.flags?.has('\\Flagged') ?? false;
      return [this.toClaim({ uid: state.uid, uidValidity: mailbox.uidValidity, ...text, flagged })];
    });
    this.log.warn(
      { event: 'claims.adopted', count: adopted.length },
      `adopted ${adopted.length} messages of ${this.inProgress} that no claim named`,
    );
    return adopted;
  }

  // Frees messages left with the claim keyword in the group, or the promote keyword in
  // Scheduled; runs on the claim connection, the one with CONDSTORE enabled.
  private async freeStranded(client: ImapFlow, leaseMs: number): Promise<void> {
    const nowMs = Date.now();
    this.noticeGroupUidValidity(client);
    if ((await this.stranded.free(client, CLAIM_KEYWORD, leaseMs, nowMs)) > 0) {
      this.window.reset();
    }

    const status = await mailboxStatus(client, this.scheduled);
    if (!status || status.messages === 0) {
      return;
    }
    try {
      await client.mailboxOpen(this.scheduled);
      if ((await this.stranded.free(client, PROMOTE_KEYWORD, leaseMs, nowMs)) > 0) {
        this.promoter.reset();
      }
    } finally {
      // IDLE must go on on the group mailbox (see promote.ts).
      await client.mailboxOpen(this.groupMailbox).catch((err: unknown) => {
        this.log.debug({ err: errorText(err) }, 'could not select the group again');
      });
    }
  }

  // The in-progress mailboxes of the group, with who holds each.
  private async listHolders(client: ImapFlow): Promise<Holder[]> {
    const { layout, topic, group } = this.options;
    const parent = layout.inProgress(topic, group) + layout.delimiter;
    const listed = await listMailboxes(client, parent + '%');
    return listed
      .filter(
        (mailbox) =>
          mailbox.path.startsWith(parent) &&
          ![...mailbox.flags].some((flag) => NOT_A_MAILBOX.includes(flag.toLowerCase())),
      )
      .map((mailbox) => parseHolder(mailbox.path, mailbox.path.slice(parent.length)));
  }

  /**
   * Runs a settle task on the in-progress mailbox, with a view that includes every claim. The
   * task is told which of `uids` belong to an in-progress mailbox of the same name that has
   * since been replaced (another UIDVALIDITY): those are lost. An in-progress mailbox that is
   * gone (taken over by a recovering consumer) loses them all.
   *
   * A task that loses its connection is run again once the connection is back (after a pause
   * that doubles up to SETTLE_RETRY_MAX_PAUSE_MS), with `retry` set, until it succeeds, the
   * claims turn out lost, the claimer closes or SETTLE_RETRY_WINDOW_MS pass. The server may
   * have carried out all or part of it before the answer was lost, so a retry takes messages
   * that are gone from the in-progress mailbox (whose UIDVALIDITY is unchanged) as settled. Only this claimer removes messages from
   * it, and a takeover renames the whole mailbox away. Dovecot also disconnects a session whose
   * selected mailbox is renamed: the retry then finds the mailbox missing or recreated, and
   * fails with ELEASELOST.
   *
   * Claims whose settle fails for another reason are forgotten as well: not named by any claim
   * this claimer holds, they are adopted by its next recover() and handed out again, rather than
   * left in the in-progress mailbox while this claimer lives.
   */
  private async settle(
    action: string,
    claims: Claim[],
    uids: number[],
    task: (client: ImapFlow, foreign: number[], retry: boolean) => Promise<void>,
  ): Promise<void> {
    let pauseMs = SETTLE_RETRY_MIN_PAUSE_MS;
    const giveUpAt = Date.now() + SETTLE_RETRY_WINDOW_MS;
    try {
      for (let attempt = 1; ; attempt += 1) {
        const retry = attempt > 1;
        try {
          await this.settleConnection.run(
            { command: action, mailbox: this.inProgress },
            async (client) => {
              if (this.settleViewStale) {
                this.settleViewStale = false;
                await client.noop();
              }
              await task(client, this.foreignUids(client, claims, uids), retry);
            },
          );
          return;
        } catch (err) {
          if (isMissingMailbox(err)) {
            throw this.leaseLost(uids, action);
          }
          const retryable = isMailbusError(err, ERROR_CODES.CONNECTION);
          if (!retryable || this.closing || Date.now() + pauseMs > giveUpAt) {
            throw err;
          }
          this.log.warn(
            { event: 'settle.retry', action, count: uids.length, attempt, err: errorText(err) },
            `${action} of ${uids.length} claims lost its connection; trying again`,
          );
        }
        await sleep(pauseMs, undefined, { signal: this.closeSignal.signal }).catch(() => undefined);
        if (this.closing) {
          throw new MailbusError(
            ERROR_CODES.CLOSED,
            `the claimer of consumer "${this.options.consumer}" closed before its ${action} ` +
              'could be carried out',
          );
        }
        pauseMs = Math.min(pauseMs * 2, SETTLE_RETRY_MAX_PAUSE_MS);
      }
    } finally {
      this.forget(claims);
    }
  }

  // The UIDs among `uids` whose claims name another UIDVALIDITY than the selected mailbox's.
  private foreignUids(client: ImapFlow, claims: Claim[], uids: number[]): number[] {
    const current = client.mailbox ? client.mailbox.uidValidity : undefined;
    return claims.flatMap((claim, i) =>
      claim instanceof ImapClaim &&
      claim.uidValidity !== undefined &&
      current !== undefined &&
      claim.uidValidity !== current
        ? [uids[i] as number]
        : [],
    );
  }

  private toClaim(message: ClaimedMessage): ImapClaim {
    this.held.add(heldKey(message.uidValidity, message.uid));
    return new ImapClaim(
      this.locationOf(message.uid),
      message.raw,
      message.size,
      message.oversized,
      message.uid,
      message.flagged,
      message.uidValidity,
    );
  }

  // Settled or lost: no longer ours to hold. A claim not made by this claimer names no
  // UIDVALIDITY; its UID is forgotten under any.
  private forget(claims: Claim[]): void {
    for (const claim of claims) {
      if (claim instanceof ImapClaim) {
        this.held.delete(heldKey(claim.uidValidity, claim.uid));
      }
    }
  }

  private isHeld(uidValidity: bigint, uid: number): boolean {
    return this.held.has(heldKey(uidValidity, uid)) || this.held.has(heldKey(undefined, uid));
  }

  private rememberHeartbeat(uid: number, uidValidity: bigint | undefined): void {
    if (uidValidity !== this.heartbeats.uidValidity) {
      this.heartbeats = { uidValidity, uids: [] };
    }
    this.heartbeats.uids.push(uid);
    this.heartbeats.uids.splice(0, this.heartbeats.uids.length - HEARTBEAT_UIDS_KEPT);
  }

  // After a claim found nothing: selects the group mailbox again when it has not been for a
  // while, and says whether that showed a new mailbox (worth claiming from at once).
  private async reselected(client: ImapFlow): Promise<boolean> {
    const nowMs = Date.now();
    if (nowMs - this.groupSelectedAtMs < GROUP_RESELECT_INTERVAL_MS) {
      return false;
    }
    this.groupSelectedAtMs = nowMs;
    const before = this.groupUidValidity;
    await client.mailboxOpen(this.groupMailbox);
    this.noticeGroupUidValidity(client);
    return before !== undefined && this.groupUidValidity !== before;
  }

  // A new claim session: it searches the whole group first, and hears from then on of flag
  // changes other sessions make there (see window.ts).
  private watchGroup(client: ImapFlow): void {
    this.window.reset();
    client.on('flags', (event: { path: string; flags: Set<string> }) => {
      if (event.path === this.groupMailbox) {
        this.window.noticeFlags(event.flags, CLAIM_KEYWORD);
      }
    });
    this.wake();
  }

  // The group mailbox was deleted and recreated (or restored from a backup) when its
  // UIDVALIDITY changes: worth a record, since messages may have gone with the old one.
  private noticeGroupUidValidity(client: ImapFlow): void {
    const mailbox = client.mailbox;
    if (!mailbox || mailbox.path !== this.groupMailbox) {
      return;
    }
    if (this.groupUidValidity !== undefined && mailbox.uidValidity !== this.groupUidValidity) {
      this.log.warn(
        {
          event: 'group.uidvalidity_changed',
          mailbox: this.groupMailbox,
          was: String(this.groupUidValidity),
          now: String(mailbox.uidValidity),
        },
        `${this.groupMailbox} was recreated (new UIDVALIDITY); claiming from the new mailbox`,
      );
      this.promoter.reset();
    }
    this.groupUidValidity = mailbox.uidValidity;
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

  /**
   * The held copy of a claim: whether it is \Flagged, and whether an earlier attempt of this
   * settle already marked it \Deleted. Gone, it is 'settled' on a retry (the attempt before
   * finished, and the lost connection took its answer), or a lost lease on a first attempt.
   */
  private async heldCopy(
    client: ImapFlow,
    claim: Claim,
    uid: number,
    retry: boolean,
    action: string,
  ): Promise<{ flagged: boolean; deleted: boolean } | 'settled'> {
    const held = await client.fetchAll(String(uid), { uid: true, flags: true }, { uid: true });
    const message = held.find((candidate) => candidate.uid === uid);
    if (!message) {
      if (retry) {
        return 'settled';
      }
      throw this.leaseLost([uid], action);
    }
    const deleted = message.flags?.has('\\Deleted') ?? false;
    if (claim instanceof ImapClaim) {
      return { flagged: claim.flagged, deleted };
    }
    return { flagged: message.flags?.has('\\Flagged') ?? false, deleted };
  }

  // Which of `uids` the selected in-progress mailbox still holds.
  private async stillHeld(client: ImapFlow, uids: number[]): Promise<number[]> {
    if (uids.length === 0) {
      return [];
    }
    const present = new Set(await searchAllUids(client, ['UID', formatUidSet(uids)]));
    return uids.filter((uid) => present.has(uid));
  }

  private async remove(client: ImapFlow, uid: number): Promise<void> {
    await deleteMessages(client, [uid]);
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

  // The first connection is no reconnect: a consumer that starts judges the others at once.
  private noteSettleConnected(): void {
    if (this.started) {
      this.settleConnectedAtMs = Date.now();
    }
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

function heldKey(uidValidity: bigint | undefined, uid: number): string {
  return `${uidValidity ?? '?'}:${uid}`;
}
