import { describe, expect, it } from 'vitest';
import { CandidateQueue } from '../../src/store/maildir/candidates.js';

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
});
