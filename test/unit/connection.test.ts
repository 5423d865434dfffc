import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseSmtpUrl, parseStoreUrl, redact } from '../../src/config/connection.js';
import { tempDir } from '../support/temp.js';

describe('connection strings', () => {
  it('defaults to the Maildir in the working directory', () => {
    expect(parseStoreUrl(undefined)).toEqual({
      kind: 'maildir',
      path: resolve('mailbus-data'),
      fsync: true,
    });
    expect(parseStoreUrl('maildir:/tmp/q', { noFsync: true })).toEqual({
      kind: 'maildir',
      path: '/tmp/q',
      fsync: false,
    });
  });

  it('reads an IMAP URL with the password from the URL, the environment or a file', () => {
    expect(parseStoreUrl('imap://bus:s%40cret@127.0.0.1:1143')).toMatchObject({
      kind: 'imap',
      host: '127.0.0.1',
      port: 1143,
      secure: false,
      user: 'bus',
      password: 's@cret',
    });
    expect(parseStoreUrl('imaps://bus@mail.example.org', { password: 'p1' })).toMatchObject({
      port: 993,
      secure: true,
      password: 'p1',
    });
    const dir = tempDir('url');
    writeFileSync(join(dir, 'pw'), 'from-file\nignored\n');
    expect(parseStoreUrl('imap://bus@h', { passwordFile: join(dir, 'pw') })).toMatchObject({
      password: 'from-file',
      port: 143,
    });
  });

  it('names the problem in a bad URL, without the password', () => {
    expect(() => parseStoreUrl('imap://h:143')).toThrow('names no user');
    expect(() => parseStoreUrl('imap://bus@h')).toThrow('no password for bus');
    expect(() => parseStoreUrl('http://u:topsecret@h')).toThrow('unsupported store URL scheme');
    expect(() => parseStoreUrl('http://u:topsecret@h')).not.toThrow('topsecret');
    expect(() => parseStoreUrl('imap://u:p@h:99999')).toThrow();
    expect(() => parseStoreUrl('maildir:')).toThrow('needs a path');
  });

  it('redacts passwords', () => {
    expect(redact('imap://bus:topsecret@h:143/')).toBe('imap://bus:***@h:143/');
    expect(redact('smtp://h:25')).toBe('smtp://h:25');
  });

  it('reads an SMTP URL', () => {
    expect(parseSmtpUrl('smtp://127.0.0.1:2525')).toMatchObject({
      host: '127.0.0.1',
      port: 2525,
      secure: false,
      user: undefined,
    });
    expect(() => parseSmtpUrl('imap://x')).toThrow('unsupported SMTP URL scheme');
  });
});
