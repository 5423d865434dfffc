// The claimer's view of a group's waiting messages: a priority queue of file names, fed by a
// directory scan and by file-system events. Names start with the delivery time, so the oldest
// message comes first; flagged (high priority) messages come before all others. Entries can
// be stale (another consumer claimed the file): a claim that loses the rename just moves on.
//
// The view is a window, not the whole group: a scan keeps the best CANDIDATE_WINDOW names it
// streams past (bestOf), and events add names only while the window has room. A worker's
// memory thus stays bounded however deep the backlog; the claimer scans again once the window
// is used up, and at once when a flagged message did not fit.

/** How many waiting messages the claimer keeps in view. */
export const CANDIDATE_WINDOW = 4096;

export interface Candidate {
  /** `new` or `cur`: the subdirectory of the group's Maildir the file was seen in. */
  dir: 'new' | 'cur';
  name: string;
  flagged: boolean;
}

function before(a: Candidate, b: Candidate): boolean {
  if (a.flagged !== b.flagged) {
    return a.flagged;
  }
  return a.name < b.name;
}

export class CandidateQueue {
  private readonly heap: Candidate[] = [];
  private readonly known = new Set<string>();

  constructor(private readonly capacity = CANDIDATE_WINDOW) {}

  get size(): number {
    return this.heap.length;
  }

  /** Adds a name unless it is known already; false when the window is full and it was left out. */
  add(candidate: Candidate): boolean {
    const id = `${candidate.dir}/${candidate.name}`;
    if (this.known.has(id)) {
      return true;
    }
    if (this.heap.length >= this.capacity) {
      return false;
    }
    this.known.add(id);
    this.heap.push(candidate);
    this.siftUp(this.heap.length - 1);
    return true;
  }

  take(): Candidate | undefined {
    const top = this.heap[0];
    if (top === undefined) {
      return undefined;
    }
    const last = this.heap.pop() as Candidate;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      this.siftDown(0);
    }
    this.known.delete(`${top.dir}/${top.name}`);
    return top;
  }

  clear(): void {
    this.heap.length = 0;
    this.known.clear();
  }

  private siftUp(index: number): void {
    siftUp(this.heap, index, before);
  }

  private siftDown(index: number): void {
    siftDown(this.heap, index, before);
  }
}

/**
 * The best `limit` candidates of a stream, in no particular order, holding no more than `limit`
 * at a time: a max-heap whose top is the worst kept, replaced by anything better.
 */
export function bestOf(candidates: Iterable<Candidate>, limit: number): Candidate[] {
  const kept: Candidate[] = [];
  const worse = (a: Candidate, b: Candidate): boolean => before(b, a);
  for (const candidate of candidates) {
    if (kept.length < limit) {
      kept.push(candidate);
      siftUp(kept, kept.length - 1, worse);
    } else if (kept.length > 0 && before(candidate, kept[0] as Candidate)) {
      kept[0] = candidate;
      siftDown(kept, 0, worse);
    }
  }
  return kept;
}

/** Binary heap steps over `heap`, where `above(a, b)` says a belongs nearer the top than b. */
type Above = (a: Candidate, b: Candidate) => boolean;

function siftUp(heap: Candidate[], index: number, above: Above): void {
  let child = index;
  while (child > 0) {
    const parent = (child - 1) >> 1;
    if (!above(heap[child] as Candidate, heap[parent] as Candidate)) {
      break;
    }
    [heap[child], heap[parent]] = [heap[parent] as Candidate, heap[child] as Candidate];
    child = parent;
  }
}

function siftDown(heap: Candidate[], index: number, above: Above): void {
  let parent = index;
  for (;;) {
    const left = parent * 2 + 1;
    const right = left + 1;
    let first = parent;
    if (left < heap.length && above(heap[left] as Candidate, heap[first] as Candidate)) {
      first = left;
    }
    if (right < heap.length && above(heap[right] as Candidate, heap[first] as Candidate)) {
      first = right;
    }
    if (first === parent) {
      return;
    }
    [heap[first], heap[parent]] = [heap[parent] as Candidate, heap[first] as Candidate];
    parent = first;
  }
}
