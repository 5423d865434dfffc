// The Maildir store's id index (src/store/maildir/id-index.ts), a cache in one file per group:
// what one process appends another reads, and an index that names far more files than the group
// has left is written anew with the ones that are left.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IdIndex } from '../../src/store/maildir/id-index.js';
import { tempDir } from '../support/temp.js';

const dir = tempDir('id-index');
const lineCount = (path: string) => readFileSync(path, 'utf8').trim().split('\n').length;

describe('the id index of a Maildir group', () => {
  it('shares what one process learnt with another, and skips lines it cannot use', () => {
    const path = join(dir, 'shared', 'orders.default');
    const first = new IdIndex(path);
    first.add('1.M1P1Q1', ['a@mailbus']);
    first.add('1.M1P1Q2', ['report@mailbus', 'b@mailbus']);
    first.add('1.M1P1Q3', ['bad\tid']); // no usable id: not written
    first.flush();
    expect(lineCount(path)).toBe(2);

    const second = new IdIndex(path);
    second.refresh();
    expect(second.get('1.M1P1Q2')).toEqual(['report@mailbus', 'b@mailbus']);
    expect(second.get('1.M1P1Q3')).toBeUndefined();

    // A half-written last line is left for the next look.
    writeFileSync(path, `${readFileSync(path, 'utf8')}1.M1P1Q4\tc@mailbus`);
    second.refresh();
    expect(second.get('1.M1P1Q4')).toBeUndefined();
    writeFileSync(path, `${readFileSync(path, 'utf8')}\n`);
    second.refresh();
    expect(second.get('1.M1P1Q4')).toEqual(['c@mailbus']);
  });

  it('writes itself anew once it names more than twice the files that are left', () => {
    const path = join(dir, 'big', 'orders.default');
    const index = new IdIndex(path);
    for (let n = 0; n < 12_000; n += 1) {
      index.add(`base-${n}`, [`id-${n}@mailbus`]);
    }
    index.flush();
    index.refresh();
    expect(lineCount(path)).toBe(12_000);

    // 6,000 left: not yet far enough past them.
    const half = new Set(Array.from({ length: 6_000 }, (_, n) => `base-${n}`));
    index.flush(half);
    expect(lineCount(path)).toBe(12_000);

    const few = new Set(['base-7', 'base-11999']);
    index.flush(few);
    expect(lineCount(path)).toBe(2);
    const reader = new IdIndex(path);
    reader.refresh();
    expect(reader.get('base-7')).toEqual(['id-7@mailbus']);
    expect(reader.get('base-8')).toBeUndefined();
  });
});
