// The benchmark's message: a JSON object of an exact serialised size, carrying its sequence
// number so that the consumer side can tell which message arrived (and when it was sent).

export interface Payload {
  seq: number;
  pad: string;
}

// One long run of filler, sliced per message, so that even 1 MB payloads cost no allocation.
let filler = '';

/** A payload whose JSON.stringify() is exactly `bytes` long (or as short as possible). */
export function makePayload(seq: number, bytes: number): Payload {
  const overhead = JSON.stringify({ seq, pad: '' }).length;
  const padLength = Math.max(0, bytes - overhead);
  if (filler.length < padLength) {
    filler = 'x'.repeat(Math.max(padLength, 2 * filler.length));
  }
  return { seq, pad: filler.slice(0, padLength) };
}

export function makePayloads(first: number, count: number, bytes: number): Payload[] {
  return Array.from({ length: count }, (_value, i) => makePayload(first + i, bytes));
}

/** The sequence number of whatever a consumer received; -1 when it is not one of ours. */
export function seqOf(payload: unknown): number {
  const seq = (payload as Partial<Payload> | null)?.seq;
  return typeof seq === 'number' ? seq : -1;
}
