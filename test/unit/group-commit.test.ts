import { describe, expect, it } from 'vitest';
import type { ComposedMessage } from '../../src/message/compose.js';
import { GROUP_COMMIT_MAX, GroupCommit } from '../../src/store/group-commit.js';

function message(n: number): ComposedMessage {
  return {
    id: `m${n}@mailbus`,
    chosenId: false,
    topic: 't',
    priority: 'normal',
    raw: Buffer.from(`${n}`),
  };
}

describe('group commit of single publishes', () => {
  it('sends a lone publish at once and those that arrive meanwhile together, in order', async () => {
    const appends: string[][] = [];
    const commit = new GroupCommit(async (messages) => {
      appends.push(messages.map((entry) => entry.id));
      await new Promise((resolve) => setTimeout(resolve, 5));
    });

    const published = Array.from({ length: 10 }, (_, n) => commit.add(message(n)));
    await Promise.all(published);

    expect(appends[0]).toEqual(['m0@mailbus']);
    expect(appends.slice(1)).toEqual([Array.from({ length: 9 }, (_, n) => `m${n + 1}@mailbus`)]);
    expect(commit.busy).toBe(false);
  });

  it('caps one append and rejects every publish of an append that failed, only those', async () => {
    const sizes: number[] = [];
    const commit = new GroupCommit(async (messages) => {
      sizes.push(messages.length);
      await new Promise((resolve) => setTimeout(resolve, 1));
      if (sizes.length === 2) {
        throw new Error('disk full');
      }
    });

    const results = await Promise.allSettled(
      Array.from({ length: GROUP_COMMIT_MAX + 11 }, (_, n) => commit.add(message(n))),
    );

    expect(sizes).toEqual([1, GROUP_COMMIT_MAX, 10]);
    const rejected = results.flatMap((result, n) => (result.status === 'rejected' ? [n] : []));
    expect(rejected).toEqual(Array.from({ length: GROUP_COMMIT_MAX }, (_, n) => n + 1));
  });
});
