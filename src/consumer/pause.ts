// Pausing a group: an operator marks it paused in the store (a `<group>.Paused` mailbox), and
// each of its consumers stops claiming until the mark is gone. The consumer loop is unaware of
// it: its claimer is wrapped so that, while the group is paused, a claim hands out nothing and
// a wait for messages waits its whole time. Running handlers finish; held claims stay held.
//
// The mark is read in the background, at most once a second, and never on the way of a claim
// (after the first one): a pause must not slow down or reorder the claims of a running group.

import type { Claim, Claimer } from '../store/store.js';

/** How often a consumer reads the mark: a pause takes effect within about this long. */
export const PAUSE_CHECK_MS = 1000;

export function pausable(
  claimer: Claimer,
  isPaused: () => Promise<boolean>,
  onChange: (paused: boolean) => void = () => undefined,
): Claimer {
  let paused = false;
  let checkedAt = Date.now();
  // A failed look at the mark (a connection down for a moment) keeps what was last read: the
  // pause must never stop a claimer that could work, nor add a failure of its own.
  const read = (): Promise<void> =>
    isPaused().then(
      (value) => {
        if (value !== paused) {
          paused = value;
          onChange(value);
        }
      },
      () => undefined,
    );
  const first = read();

  const pausedNow = (): boolean => {
    if (Date.now() - checkedAt >= PAUSE_CHECK_MS) {
      checkedAt = Date.now();
      void read();
    }
    return paused;
  };

  return {
    async claim(max: number): Promise<Claim[]> {
      await first;
      return pausedNow() ? [] : claimer.claim(max);
    },
    async waitForMessages(timeoutMs: number, signal: AbortSignal): Promise<void> {
      if (!pausedNow()) {
        return claimer.waitForMessages(timeoutMs, signal);
      }
      // Paused: new mail must not wake the loop into a claim that hands out nothing.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(timeoutMs, PAUSE_CHECK_MS));
        signal.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
    ack: (claims) => claimer.ack(claims),
    release: (claim, options) => claimer.release(claim, options),
    deadLetter: (claim, raw) => claimer.deadLetter(claim, raw),
    quarantine: (claim, verdict) => claimer.quarantine(claim, verdict),
    heartbeat: () => claimer.heartbeat(),
    recover: (leaseMs) => claimer.recover(leaseMs),
    close: () => claimer.close(),
  };
}
