// The claimer's view of a group's waiting messages: a priority queue of file names, fed by a
// directory scan and by file-system events. Names start with the delivery time, so the oldest
// message comes first; flagged (high priority) messages come before all others. Entries can
// be stale (another consumer claimed the file): a claim that loses the rename just moves on.

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

  get size(): number {
    return this.heap.length;
  }

  add(candidate: Candidate): void {
    const id = `${candidate.dir}/${candidate.name}`;
    if (this.known.has(id)) {
      return;
    }
    this.known.add(id);
    this.heap.push(candidate);
    this.siftUp(this.heap.length - 1);
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
