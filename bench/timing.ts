// Clocks, bounded waits and the small statistics the benchmark reports.

import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

export function now(): number {
  return performance.now();
}

/**
 * Counts handled messages by sequence number: how many distinct ones arrived, how many came
 * twice, and when. `reached(n, deadline)` resolves once n distinct messages were seen or the
 * deadline (a performance.now() value) passed, whichever comes first.
 */
export class Arrivals {
  readonly firstAt: Map<number, number> = new Map();
  duplicates = 0;
  lastAt = 0;
  private waiting: { target: number; resolve: () => void } | undefined;

  get distinct(): number {
    return this.firstAt.size;
  }

  record(seq: number): void {
    const at = now();
    if (this.firstAt.has(seq)) {
      this.duplicates += 1;
      return;
    }
    this.firstAt.set(seq, at);
    this.lastAt = at;
    if (this.waiting && this.firstAt.size >= this.waiting.target) {
      this.waiting.resolve();
      this.waiting = undefined;
    }
  }

  async reached(target: number, deadline: number): Promise<boolean> {
    if (this.firstAt.size >= target) {
      return true;
    }
    const left = Math.max(0, deadline - now());
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.waiting = { target, resolve };
      timer = setTimeout(resolve, left);
    });
    clearTimeout(timer);
    this.waiting = undefined;
    return this.firstAt.size >= target;
  }
}

/**
 * Runs fn(0..total-1) with at most `inflight` calls outstanding, stopping early at the
 * deadline. Resolves with how many calls completed; the first failure rejects.
 */
export async function pipelined(
  total: number,
  inflight: number,
  deadline: number,
  fn: (index: number) => Promise<void>,
): Promise<number> {
  let next = 0;
  let completed = 0;
  let failure: unknown;
  const lane = async (): Promise<void> => {
    while (next < total && failure === undefined && now() < deadline) {
      const index = next;
      next += 1;
      try {
        await fn(index);
        completed += 1;
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(inflight, total)) }, lane));
  if (failure !== undefined) {
    throw failure;
  }
  return completed;
}

/** Rejects with a clear message when `promise` takes longer than `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) {
    return Number.NaN;
  }
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** The nearest-rank percentile (p in 0..100) of `values`. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) {
    return Number.NaN;
  }
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}
