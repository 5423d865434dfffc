// Promotion of due scheduled messages: from a group's Scheduled mailbox, where delayed publishes
// and retries in backoff wait with an INTERNALDATE that says when they fall due, into the group
// mailbox, where consumers claim them. Every claimer of the group promotes, from its claim
// connection just before it claims, so no separate process has to run.
//
// Why it works this way:
// - Cheap when there is nothing to do. A claimer looks at most every PROMOTE_INTERVAL_MS, and a
//   look is one STATUS of Scheduled (STATUS works on a mailbox the session has not selected).
//   An empty Scheduled, or one unchanged since the last look (same UIDVALIDITY and
//   HIGHESTMODSEQ) whose earliest message is not due yet, costs nothing more. A queue without
//   scheduled messages pays one round trip per 250 ms of claiming: about nothing per claim.
// - Bounded when there is much to do. Only the earliest PROMOTE_BATCH_MAX_MESSAGES messages are
//   read, found by SORT ARRIVAL (INTERNALDATE order) with ESORT PARTIAL, so a Scheduled holding
//   a million retries for tomorrow costs what one holding ten does. A server without SORT sends
//   the INTERNALDATE of every message instead, and they are sorted here.
// - Exclusive. Several claimers in several processes promote at once, and UID MOVE is not
//   exclusive on Dovecot (claim.ts), so due messages are first taken with a conditional STORE of
//   PROMOTE_KEYWORD, confirmed by a claim record (arbiter.ts), and only the winners move. Not the claim keyword: a moved message keeps its
//   keywords, and must arrive in the group claimable. PROMOTE_KEYWORD stays on the promoted
//   message, where it means nothing: only in Scheduled does it mark a message as taken.
// - On time. The earliest INTERNALDATE not yet due is remembered (nextDueMs), and
//   waitForMessages sleeps no longer than until then, so a message is handed out within about a
//   second after its time: its INTERNALDATE is its notBefore rounded up to the whole second
//   (schedule.ts), and the first claim after that promotes it.
// - Far ahead. A copy due beyond the horizon a server accepts for INTERNALDATE carries its real
//   time in a header line (schedule.ts); when its INTERNALDATE comes, it is taken like any due
//   message and stored again, dated nearer its time, instead of being moved to the group.
// - Due means INTERNALDATE <= this machine's clock. The INTERNALDATE came from the clock of the
//   publisher (or of the consumer that released the message), so clocks of the machines of one
//   queue should agree to well under a second, as NTP keeps them.
// - A promoter that dies between its STORE and its MOVE leaves messages with the keyword in
//   Scheduled, which nobody would promote; recover() frees them once they stayed that way for a
//   lease (stranded.ts).

import type { ImapFlow } from 'imapflow';
import { errorText } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ClaimArbiter } from './arbiter.js';
import { arbitrateClaim, takeExclusively } from './claim.js';
import {
  creatingMailbox,
  deleteMessages,
  uidsByArrival,
  fetchSources,
  formatUidSet,
  mailboxStatus,
  moveMessages,
} from './commands.js';
import { NOT_BEFORE_HEADER, readNotBefore, scheduledCopy } from './schedule.js';

/**
 * The least time between two looks at Scheduled (unless a message is known to be due). Short
 * enough that a due message waits a small part of a second for the look; long enough that the
 * STATUS is a negligible share of a busy claimer's round trips.
 */
export const PROMOTE_INTERVAL_MS = 250;

/**
 * Due messages promoted by one look. Bounds the FETCH and the STORE of one look; a claimer that
 * finds a full batch due looks again at its next claim, without waiting the interval.
 */
export const PROMOTE_BATCH_MAX_MESSAGES = 500;

/** Marks a scheduled message as being promoted by one claimer: exclusive like CLAIM_KEYWORD. */
export const PROMOTE_KEYWORD = '$MailbusPromoting';

/** A scheduled message that could be promoted: its UID, due time and MODSEQ. */
interface Candidate {
  uid: number;
  /** Its INTERNALDATE. */
  dueMs: number;
  modseq: bigint | undefined;
  flagged: boolean;
  /** It names its real due time in NOT_BEFORE_HEADER: due by INTERNALDATE means a hop. */
  farAhead: boolean;
}

export class ScheduledPromoter {
  private lookedAtMs = -Infinity;
  // What Scheduled was at the last complete look: while it is unchanged, and its earliest
  // message not due, there is nothing to read.
  private lastLook: { uidValidity: bigint; highestModseq: bigint } | undefined;
  private earliestDueMs: number | undefined;

  constructor(
    private readonly scheduled: string,
    private readonly group: string,
    private readonly log: Logger,
    private readonly arbiter: ClaimArbiter,
  ) {}

  /**
   * When the earliest message seen in Scheduled falls due (epoch ms), or undefined when no
   * waiting message is known; waitForMessages does not sleep past it.
   */
  get nextDueMs(): number | undefined {
    return this.earliestDueMs;
  }

  /** Whether a claim should look at Scheduled first. */
  wanted(nowMs: number): boolean {
    return (
      nowMs - this.lookedAtMs >= PROMOTE_INTERVAL_MS ||
      (this.earliestDueMs !== undefined && this.earliestDueMs <= nowMs)
    );
  }

  /** Forgets what it knew, after something changed that it cannot see (a new UIDVALIDITY). */
  reset(): void {
    this.lastLook = undefined;
    this.earliestDueMs = undefined;
  }

  /**
   * Looks at Scheduled and moves every due message it wins into the group mailbox; returns how
   * many. Called with the group mailbox selected, and leaves it selected: claims and IDLE work
   * on it.
   */
  async promote(client: ImapFlow, nowMs = Date.now()): Promise<number> {
    this.lookedAtMs = nowMs;
    const status = await mailboxStatus(client, this.scheduled);
    if (!status || status.messages === 0) {
      this.reset();
      return 0;
    }
    const unchanged =
      this.lastLook !== undefined &&
      status.uidValidity === this.lastLook.uidValidity &&
      status.highestModseq === this.lastLook.highestModseq;
    if (unchanged && (this.earliestDueMs === undefined || this.earliestDueMs > nowMs)) {
      return 0;
    }

    let promoted: number;
    try {
      await client.mailboxOpen(this.scheduled);
      promoted = await this.promoteSelected(client, nowMs);
    } finally {
      await this.selectGroup(client);
    }
    // Recorded only after a complete look: a look cut short must be repeated. Our own STORE and
    // MOVE changed HIGHESTMODSEQ since, so the next look reads Scheduled once more: a few round
    // trips, and only after a promotion.
    if (status.uidValidity !== undefined && status.highestModseq !== undefined) {
      this.lastLook = { uidValidity: status.uidValidity, highestModseq: status.highestModseq };
    }
    return promoted;
  }

  private async promoteSelected(client: ImapFlow, nowMs: number): Promise<number> {
    const candidates = await this.earliest(client);
    const due = candidates.filter((candidate) => candidate.dueMs <= nowMs);
    this.earliestDueMs = candidates.find((candidate) => candidate.dueMs > nowMs)?.dueMs;
    if (due.length >= PROMOTE_BATCH_MAX_MESSAGES) {
      // A full batch was due: more may be, beyond it.
      this.earliestDueMs = nowMs;
    }
    if (due.length === 0) {
      return 0;
    }

    // The MODSEQs come from one FETCH, one snapshot: a STORE UNCHANGEDSINCE their highest fails
    // for every message another promoter touched since, as a claim's does (claim.ts).
    const modseq = due.reduce<bigint | undefined>(
      (highest, { modseq: m }) =>
        m !== undefined && (highest === undefined || m > highest) ? m : highest,
      undefined,
    );
    const uids = due.map((candidate) => candidate.uid);
    const stored = await takeExclusively(client, { uids, modseq }, PROMOTE_KEYWORD);
    if (stored.length === 0) {
      return 0;
    }
    // The STORE alone is not always exclusive on Dovecot (arbiter.ts).
    const { kept, record } = await arbitrateClaim(client, this.arbiter, stored);
    const won = new Set(kept);
    if (won.size === 0) {
      this.arbiter.finished(record);
      return 0;
    }

    const ready = due.filter((c) => won.has(c.uid) && !c.farAhead).map((c) => c.uid);
    const far = due.filter((c) => won.has(c.uid) && c.farAhead);
    let promoted = 0;
    if (ready.length > 0) {
      const moved = await creatingMailbox(client, this.group, () =>
        moveMessages(client, ready, this.group),
      );
      promoted += moved.targets.size;
    }
    if (far.length > 0) {
      promoted += await this.hop(client, far, nowMs);
    }
    this.arbiter.finished(record);
    this.log.debug({ due: due.length, won: won.size, promoted, hops: far.length }, 'promoted');
    return promoted;
  }

  /**
   * Stores each copy that was due beyond the horizon again: in the group without its header
   * line once its real time has come, else in Scheduled dated nearer that time. The new copy
   * first, then the old one goes: a crash in between duplicates, never loses. Returns how many
   * went to the group.
   */
  private async hop(client: ImapFlow, far: Candidate[], nowMs: number): Promise<number> {
    const sources = await fetchSources(
      client,
      far.map((candidate) => candidate.uid),
    );
    const done: number[] = [];
    const unreadable: number[] = [];
    let promoted = 0;
    for (const candidate of far) {
      const raw = sources.get(candidate.uid);
      const scheduled = raw && readNotBefore(raw);
      if (!scheduled) {
        // The header is not the first line: not a copy of ours. Handed out as it is.
        if (raw) {
          unreadable.push(candidate.uid);
        }
        continue;
      }
      const flags = candidate.flagged ? ['\\Flagged'] : [];
      if (scheduled.dueMs <= nowMs) {
        const dated = new Date(scheduled.dueMs);
        await creatingMailbox(client, this.group, () =>
          client.append(this.group, scheduled.original, flags, dated),
        );
        promoted += 1;
      } else {
        const copy = scheduledCopy(scheduled.original, new Date(scheduled.dueMs), nowMs);
        await client.append(this.scheduled, copy.raw, flags, copy.internalDate);
      }
      done.push(candidate.uid);
    }
    await deleteMessages(client, done);
    if (unreadable.length > 0) {
      const moved = await creatingMailbox(client, this.group, () =>
        moveMessages(client, unreadable, this.group),
      );
      promoted += moved.targets.size;
    }
    return promoted;
  }

  /** The earliest messages of the selected Scheduled that nobody is promoting, earliest first. */
  private async earliest(client: ImapFlow): Promise<Candidate[]> {
    if (!client.mailbox || client.mailbox.exists === 0) {
      return [];
    }
    const criteria = ['UNKEYWORD', PROMOTE_KEYWORD, 'UNDELETED'];
    const sorted = await uidsByArrival(client, criteria, PROMOTE_BATCH_MAX_MESSAGES);
    if (sorted !== undefined && sorted.length === 0) {
      return [];
    }

    const range = sorted === undefined ? '1:*' : formatUidSet(sorted);
    const states = await client.fetchAll(
      range,
      { uid: true, internalDate: true, flags: true, headers: [NOT_BEFORE_HEADER] },
      { uid: true },
    );
    const candidates: Candidate[] = [];
    for (const state of states) {
      const dueMs = state.internalDate === undefined ? NaN : new Date(state.internalDate).getTime();
      const taken = state.flags?.has(PROMOTE_KEYWORD) || state.flags?.has('\\Deleted');
      if (!taken && Number.isFinite(dueMs)) {
        candidates.push({
          uid: state.uid,
          dueMs,
          modseq: state.modseq,
          flagged: state.flags?.has('\\Flagged') ?? false,
          farAhead: (state.headers?.toString('latin1') ?? '').includes(':'),
        });
      }
    }
    candidates.sort((a, b) => a.dueMs - b.dueMs || a.uid - b.uid);
    return candidates.slice(0, PROMOTE_BATCH_MAX_MESSAGES);
  }

  // Back to the group mailbox, even after a failure: imapflow IDLEs on whatever is selected,
  // and an IDLE on Scheduled would not hear of new messages in the group.
  private async selectGroup(client: ImapFlow): Promise<void> {
    try {
      await client.mailboxOpen(this.group);
    } catch (err) {
      this.log.debug({ err: errorText(err) }, 'could not select the group again after promoting');
    }
  }
}
