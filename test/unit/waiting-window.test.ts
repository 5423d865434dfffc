import { describe, expect, it } from 'vitest';
import { FULL_SEARCH_INTERVAL_MS, WaitingWindow } from '../../src/store/imap/window.js';

const CLAIMED = '$MailbusClaimed';

function found(...uids: number[]) {
  return { uids, modseq: uids.length > 0 ? 7n : undefined };
}

describe('the IMAP claimer window over waiting messages', () => {
  it('searches from 1 first, then from the lowest UID found waiting', () => {
    let nowMs = 0;
    const window = new WaitingWindow(() => nowMs);

    window.startRound(5n, 0);
    expect([window.from('flagged'), window.from('normal')]).toEqual([1, 1]);
    window.searched('flagged', found(), 900);
    window.searched('normal', found(120, 121, 130), 900);

    nowMs += 10;
    window.startRound(5n, 0);
    // No flagged message up to the top: the next look starts above it.
    expect([window.from('flagged'), window.from('normal')]).toEqual([901, 120]);
    window.searched('flagged', found(), 905);
    window.searched('normal', found(131), 905);

    nowMs += 10;
    window.startRound(5n, 0);
    expect([window.from('flagged'), window.from('normal')]).toEqual([906, 131]);
  });

  it('starts over from 1 after a reset, but not in the middle of a round', () => {
    const window = new WaitingWindow(() => 0);
    window.startRound(5n, 0);
    window.searched('flagged', found(), 50);

    window.reset();
    window.searched('normal', found(40), 50);
    expect(window.from('normal')).toBe(40);

    window.startRound(5n, 0);
    expect([window.from('flagged'), window.from('normal')]).toEqual([1, 1]);
  });

  it('starts over from 1 when the mailbox has another UIDVALIDITY', () => {
    const window = new WaitingWindow(() => 0);
    window.startRound(5n, 0);
    window.searched('normal', found(300), 400);
    window.searched('flagged', found(), 400);

    window.startRound(5n, 0);
    expect(window.from('normal')).toBe(300);
    window.startRound(6n, 0);
    expect([window.from('flagged'), window.from('normal')]).toEqual([1, 1]);
  });

  it('searches from 1 again once FULL_SEARCH_INTERVAL_MS have passed', () => {
    let nowMs = 1_000;
    const window = new WaitingWindow(() => nowMs);
    window.startRound(5n, 0);
    window.searched('normal', found(300), 400);
    window.searched('flagged', found(), 400);

    nowMs += FULL_SEARCH_INTERVAL_MS - 1;
    window.startRound(5n, 0);
    expect(window.from('normal')).toBe(300);

    nowMs += 1;
    window.startRound(5n, 0);
    expect(window.from('normal')).toBe(1);
  });

  it('starts over when another session leaves a message waiting, not when it claims one', () => {
    const window = new WaitingWindow(() => 0);
    window.startRound(5n, 0);
    window.searched('normal', found(300), 400);
    window.searched('flagged', found(), 400);

    // Another consumer's claim, and the removal of a message, change nothing below the floor.
    window.noticeFlags(new Set([CLAIMED]), CLAIMED);
    window.noticeFlags(new Set(['\\Deleted']), CLAIMED);
    window.startRound(5n, 0);
    expect(window.from('normal')).toBe(300);

    // A stranded message freed (or starred) by another session may wait below the floor.
    window.noticeFlags(new Set(['\\Flagged']), CLAIMED);
    window.startRound(5n, 0);
    expect([window.from('flagged'), window.from('normal')]).toEqual([1, 1]);
  });
});
