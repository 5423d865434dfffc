import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/errors.js';
import { checkKey, checkName } from '../../src/names.js';

describe('topic and group names', () => {
  it('accepts lower-case letters, digits, dash and underscore', () => {
    expect(checkName('topic', 'order-created')).toBe('order-created');
    expect(checkName('group', 'audit_log2')).toBe('audit_log2');
  });

  it.each([
    ['Orders', "'O'"],
    ['a.b', "'.'"],
    ['a/b', "'/'"],
    ['../x', "'.'"],
    ['.hidden', "'.'"],
    ['a*', "'*'"],
    ['a%', "'%'"],
    ['a\nb', 'U+000A'],
    ['a\0b', 'U+0000'],
    ['-lead', "'-'"],
    ['ünï', "'ü'"],
  ])('refuses %j, naming %s', (name, named) => {
    expect(() => checkName('topic', name)).toThrow(named);
    try {
      checkName('topic', name);
    } catch (err) {
      expect(err).toMatchObject({ code: ERROR_CODES.INVALID_NAME });
    }
  });

  it('refuses empty, over-long and reserved names', () => {
    expect(() => checkName('group', '')).toThrow('non-empty');
    expect(() => checkName('group', 'a'.repeat(65))).toThrow('limit is 64');
    expect(() => checkName('topic', 'inbox')).toThrow('reserved');
  });

  it('lets keys hold any printable text but no control characters', () => {
    expect(checkKey('customer 42 / ünï')).toBe('customer 42 / ünï');
    expect(() => checkKey('a\r\nBcc: x')).toThrow('U+000D');
    expect(() => checkKey('')).toThrow('non-empty');
  });
});
