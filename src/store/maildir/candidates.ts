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
    const heap = this.heap;
    let child = index;
    while (child > 0) {
      const parent = (child - 1) >> 1;
      if (!before(heap[child] as Candidate, heap[parent] as Candidate)) {
        break;
      }
      [heap[child], heap[parent]] = [heap[parent] as Candidate, heap[child] as Candidate];
      child = parent;
    }
  }

  private siftDown(index: number): void {
    const heap = this.heap;
    let parent = index;
    for (;;) {
      const left = parent * 2 + 1;
      const right = left + 1;
      let first = parent;
      if (left < heap.length && before(heap[left] as Candidate, heap[first] as Candidate)) {
        first = left;
      }
      if (right < heap.length && before(heap[right] as Candidate, heap[first] as Candidate)) {
        first = right;
      }
      if (first === parent) {
        return;
      }
      [heap[first], heap[parent]] = [heap[parent] as Candidate, heap[first] as Candidate];
      parent = first;
    }
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
      let child = kept.length - 1;
      while (child > 0) {
        const parent = (child - 1) >> 1;
        if (!worse(kept[child] as Candidate, kept[parent] as Candidate)) {
          break;
        }
        [kept[child], kept[parent]] = [kept[parent] as Candidate, kept[child] as Candidate];
        child = parent;
      }
      continue;
    }
    if (kept.length === 0 || !before(candidate, kept[0] as Candidate)) {
      continue;
    }
    kept[0] = candidate;
    let parent = 0;
    for (;;) {
      const left = parent * 2 + 1;
      const right = left + 1;
      let first = parent;
      if (left < kept.length && worse(kept[left] as Candidate, kept[first] as Candidate)) {
        first = left;
      }
      if (right < kept.length && worse(kept[right] as Candidate, kept[first] as Candidate)) {
        first = right;
      }
      if (first === parent) {
        break;
      }
      [kept[first], kept[parent]] = [kept[parent] as Candidate, kept[first] as Candidate];
      parent = first;
    }
  }
  return kept;
}
