// Collects acks for a short moment so that a store can settle many messages in one command (one
// IMAP UID MOVE for a whole batch). Each ack's promise settles with its batch.

import { LeaseLostError } from '../errors.js';
import type { Claim } from '../store/store.js';

/** Longest an ack waits for companions: short enough to stay invisible in latency figures. */
export const ACK_BATCH_DELAY_MS = 2;
/** Most acks settled by one store call. */
export const ACK_BATCH_MAX = 200;

interface Pending {
  claim: Claim;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class AckBatch {
  private pending: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();

  constructor(private readonly settle: (claims: Claim[]) => Promise<void>) {}

  add(claim: Claim): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ claim, resolve, reject });
      if (this.pending.length >= ACK_BATCH_MAX) {
        void this.flush();
      } else if (this.timer === undefined) {
        this.timer = setTimeout(() => void this.flush(), ACK_BATCH_DELAY_MS);
      }
    });
  }

  /** Settles everything pending; resolves when every earlier batch has settled too. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    // One batch at a time: a store connection runs one command at a time anyway.
    this.flushing = this.flushing.then(async () => {
      if (batch.length === 0) {
        return;
      }
      try {
        await this.settle(batch.map((entry) => entry.claim));
        for (const entry of batch) {
          entry.resolve();
        }
      } catch (err) {
        // A store that settled part of the batch names the claims it lost; the rest are done.
        const lost = err instanceof LeaseLostError ? new Set(err.locations) : undefined;
        for (const entry of batch) {
          if (lost && !lost.has(entry.claim.location)) {
            entry.resolve();
          } else {
            entry.reject(err);
          }
        }
      }
    });
    return this.flushing;
  }
}
