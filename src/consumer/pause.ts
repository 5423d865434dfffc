// Pausing a group: an operator marks it paused in the store (a `<group>.Paused` mailbox), and
// each of its consumers stops claiming until the mark is gone. The consumer loop is unaware of
// it: its claimer is wrapped so that, while the group is paused, a claim hands out nothing and
// a wait for messages waits its whole time. Running handlers finish; held claims stay held.

import type { Claim, Claimer } from '../store/store.js';

/** How long a consumer trusts what it last read of the mark: a pause takes effect within it. */
export const PAUSE_CHECK_MS = 1000;

export function pausable(claimer: Claimer, isPaused: () => Promise<boolean>): Claimer {
  let checkedAt = 0;
  let paused = false;

  const pausedNow = async (): Promise<boolean> => {
    if (Date.now() - checkedAt >= PAUSE_CHECK_MS) {
      paused = await isPaused();
      checkedAt = Date.now();
    }
    return paused;
  };

  return {
    async claim(max: number): Promise<Claim[]> {
      return (await pausedNow()) ? [] : claimer.claim(max);
    },
    async waitForMessages(timeoutMs: number, signal: AbortSignal): Promise<void> {
      if (!(await pausedNow())) {
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
    heartbeat: () => claimer.heartbeat(),
    recover: (leaseMs) => claimer.recover(leaseMs),
    close: () => claimer.close(),
  };
}
