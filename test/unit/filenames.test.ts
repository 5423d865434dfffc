// Maildir file names: the key digest they carry and the delivery order they sort in.

import { describe, expect, it } from 'vitest';
import { keyDigest } from '../../src/message/ordering.js';
import {
  compareDeliveryOrder,
  keyDigestOf,
  uniqueBaseName,
} from '../../src/store/maildir/filenames.js';

describe('Maildir file names', () => {
  it('carry the digest of an ordering key, and none without one', () => {
    const digest = keyDigest('order-42');
    expect(digest).toMatch(/^[0-9a-f]{16}$/);
    expect(keyDigest('order-42')).toBe(digest);
    expect(keyDigest('order-43')).not.toBe(digest);
    expect(keyDigestOf(uniqueBaseName(100, Date.now(), digest))).toBe(digest);
    expect(keyDigestOf(uniqueBaseName(100))).toBeUndefined();
  });

  it('sort in delivery order within one millisecond, past nine deliveries', () => {
    const now = Date.now();
    const names = Array.from({ length: 25 }, () => uniqueBaseName(10, now));
    const shuffled = [...names].reverse();
    expect(shuffled.sort(compareDeliveryOrder)).toEqual(names);
  });

  it('sort by time first', () => {
    const later = uniqueBaseName(10, 2_000_000_000_000);
    const earlier = uniqueBaseName(10, 1_000_000_000_000);
    expect(compareDeliveryOrder(earlier, later)).toBeLessThan(0);
    expect(compareDeliveryOrder(later, earlier)).toBeGreaterThan(0);
  });
});
