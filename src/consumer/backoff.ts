// Retry delays: exponential, with jitter so that messages that failed together (a database
// that was down for a minute) do not all come back at the same instant.

/** How far a delay may stray from its exponential value, either way. */
const JITTER_FRACTION = 0.2;

/**
 * The delay before retry number `attempt` (1 for the first retry): `firstMs`, doubling with
 * each further attempt up to `maxMs`, then moved by up to 20 % either way.
 */
export function backoffMs(attempt: number, firstMs: number, maxMs: number): number {
  const exponential = Math.min(maxMs, firstMs * 2 ** Math.max(0, attempt - 1));
  const jitter = exponential * JITTER_FRACTION * (Math.random() * 2 - 1);
  return Math.max(0, Math.round(exponential + jitter));
}
