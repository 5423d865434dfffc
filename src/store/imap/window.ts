// Where a claimer's SEARCH for waiting messages starts. A SEARCH costs the server time for
// every message of the UID range it covers, returned or not: on Dovecot 2.3 a claim SEARCH of
// a group mailbox holding 100,000 messages took 35-50 ms, the same SEARCH limited to the last
// 1,000 UIDs about 1 ms. A busy group holds a deep backlog, and every claim round searches it.
//
// So each list of waiting messages (flagged and not) keeps a floor: the lowest UID its last
// SEARCH found waiting. Nothing below it was waiting then, and a message cannot start waiting
// under it by arriving, as every message that enters the mailbox (a publish, a release, a
// promotion, a takeover) gets a UID above all the present ones. The next SEARCH starts at the
// floor (and claim.ts bounds how far above it each SEARCH reaches).
//
// A message below the floor can only wait again if a session takes the claim keyword off it
// (the stranded watch of some consumer frees it) or stars or unstars it. So the floors go
// back to 1 when
// - this claimer frees stranded messages itself, or its connection is new;
// - the server reports a flag change of a message that is now waiting (another session freed
//   or starred it: Dovecot reports other sessions' flag changes to every session that has the
//   mailbox selected);
// - the group's UIDVALIDITY changes (another mailbox of that name);
// - FULL_SEARCH_INTERVAL_MS have passed since the last search from 1, which bounds the wait of
//   a freed message whose report this claimer did not get.
// Both lists search from 1 in that round.

import type { SearchResult } from './commands.js';

/** The longest a claimer searches only above its floors. */
export const FULL_SEARCH_INTERVAL_MS = 5_000;

export type WaitingList = 'flagged' | 'normal';

export class WaitingWindow {
  private floors: Record<WaitingList, number> = { flagged: 1, normal: 1 };
  private uidValidity: bigint | undefined;
  private lastFullMs = -Infinity;
  private resetPending = true;
  private top = 0;

  constructor(private readonly clock: () => number = Date.now) {}

  /**
   * Starts a claim round's searches of the mailbox with this UIDVALIDITY, whose highest UID is
   * `top`: from 1 when the floors were reset since the last round, the mailbox is another one,
   * or a full search is due.
   */
  startRound(uidValidity: bigint | undefined, top: number): void {
    this.top = top;
    const nowMs = this.clock();
    const due = nowMs - this.lastFullMs >= FULL_SEARCH_INTERVAL_MS;
    if (this.resetPending || due || uidValidity !== this.uidValidity) {
      this.floors = { flagged: 1, normal: 1 };
      this.lastFullMs = nowMs;
      this.resetPending = false;
    }
    this.uidValidity = uidValidity;
  }

  /** The highest UID the last round began with: where to look for the next one's from. */
  get lastTop(): number {
    return this.top;
  }

  /** The lowest UID this round's SEARCH of `list` looks at. */
  from(list: WaitingList): number {
    return this.floors[list];
  }

  /**
   * This round's search of `list` found `found`, its lowest waiting messages from the floor up,
   * or nothing from the floor up to `top`, the highest UID when it began.
   */
  searched(list: WaitingList, found: SearchResult, top: number): void {
    this.floors[list] = found.uids[0] ?? top + 1;
  }

  /**
   * The next round searches from 1. Called between rounds or during one: a round under way
   * keeps its floors, the next one starts over.
   */
  reset(): void {
    this.resetPending = true;
  }

  /**
   * A flag change that another session made, as the server reported it: one that leaves the
   * message without `claimKeyword` (and not deleted) may have made it wait below a floor.
   */
  noticeFlags(flags: Set<string>, claimKeyword: string): void {
    if (!flags.has(claimKeyword) && !flags.has('\\Deleted')) {
      this.reset();
    }
  }
}
