import { describe, expect, it } from 'vitest';
import { CandidateQueue, bestOf } from '../../src/store/maildir/candidates.js';
import type { Candidate } from '../../src/store/maildir/candidates.js';

describe('the Maildir claimer candidate queue', () => {
  it('hands out flagged names first, then oldest first, each once', () => {
    const queue = new CandidateQueue();
    const names = ['1700000003.a', '1700000001.b', '1700000002.c', '1700000009.d'];
    for (const name of names) {
      queue.add({ dir: 'new', name, flagged: false });
    }
    queue.add({ dir: 'cur', name: '1700000005.e:2,F', flagged: true });
    queue.add({ dir: 'new', name: '1700000001.b', flagged: false });

    const order: string[] = [];
    for (let c = queue.take(); c !== undefined; c = queue.take()) {
      order.push(c.name);
    }
    expect(order).toEqual([
      '1700000005.e:2,F',
      '1700000001.b',
      '1700000002.c',
      '1700000003.a',
      '1700000009.d',
    ]);
  });

  it('stays ordered over many random inserts', () => {
    const queue = new CandidateQueue();
    const names = Array.from({ length: 2000 }, (_, i) => String(1e9 + ((i * 7919) % 2000)));
    names.forEach((name) => queue.add({ dir: 'new', name, flagged: false }));
    const taken: string[] = [];
    for (let c = queue.take(); c !== undefined; c = queue.take()) {
      taken.push(c.name);
    }
    expect(taken).toEqual([...new Set(names)].sort());
  });

  it('leaves a name out when its window is full, and says so', () => {
    const queue = new CandidateQueue(2);
    expect(queue.add({ dir: 'new', name: '1700000001.a', flagged: false })).toBe(true);
    expect(queue.add({ dir: 'new', name: '1700000002.b', flagged: false })).toBe(true);
    expect(queue.add({ dir: 'new', name: '1700000003.c', flagged: false })).toBe(false);
    expect(queue.add({ dir: 'new', name: '1700000001.a', flagged: false })).toBe(true);
    expect(queue.size).toBe(2);
  });

  it('keeps the best few of many, flagged first then oldest, holding no more than that', () => {
    const names = Array.from({ length: 5000 }, (_, i) => String(1e9 + ((i * 7919) % 5000)));
    const stream = names.map((name, i): Candidate => ({
      dir: 'new',
      name,
      flagged: i % 1000 === 7,
    }));
    const kept = bestOf(stream, 10);

    const queue = new CandidateQueue();
    kept.forEach((candidate) => queue.add(candidate));
    const order: string[] = [];
    for (let c = queue.take(); c !== undefined; c = queue.take()) {
      order.push(c.name);
    }
    const expected = [...stream]
      .sort((a, b) => Number(b.flagged) - Number(a.flagged) || (a.name < b.name ? -1 : 1))
      .slice(0, 10)
      .map((candidate) => candidate.name);
    expect(order).toEqual(expected);
    expect(order.slice(0, 5).every((name) => stream.find((c) => c.name === name)?.flagged)).toBe(
      true,
    );
  });
});
