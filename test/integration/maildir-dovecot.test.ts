// A Maildir written by mailbus is a Maildir Dovecot can serve: the same folders, counts and
// flags appear over IMAP, and mailbus reading it through Dovecot sees the same queue.

import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import { addUser } from '../servers/mail-servers.js';
import { mailServers } from '../support/imap.js';
import { tempDir } from '../support/temp.js';

describe('a Maildir filled by mailbus, served by Dovecot', () => {
  it('shows the same mailboxes, counts and flags over IMAP', async () => {
    const info = mailServers();
    const maildir = join(tempDir('served'), 'queue');
    const topic = 'served-orders';

    const local = await connect({ url: `maildir:${maildir}` });
    await local.subscribe(topic, 'default');
    await local.subscribe(topic, 'audit');
    await local.publishBatch(topic, [
      { payload: { n: 1 } },
      { payload: { n: 2 } },
      { payload: { n: 3 } },
      { payload: { n: 4 }, priority: 'high' },
    ]);
    const worker = local.consume(topic, () => undefined, { group: 'audit', maxMessages: 4 });
    await worker.done;
    const poison = local.consume(
      topic,
      () => {
        throw new Error('no');
      },
      { maxMessages: 1, maxAttempts: 1 },
    );
    await poison.done;
    const localStats = await local.stats(topic);
    await local.close();
    expect(localStats).toEqual([
      {
        topic,
        group: 'audit',
        waiting: 0,
        scheduled: 0,
        inFlight: 0,
        handled: 4,
        dead: 0,
        quarantined: 0,
        consumers: 0,
      },
      {
        topic,
        group: 'default',
        waiting: 3,
        scheduled: 0,
        inFlight: 0,
        handled: 0,
        dead: 1,
        quarantined: 0,
        consumers: 0,
      },
    ]);

    const user = `viewer-${randomBytes(3).toString('hex')}`;
    const password = randomBytes(8).toString('hex');
    await addUser(info, user, password, maildir);

    const client = new ImapFlow({
      host: info.host,
      port: info.imapPort,
      secure: false,
      auth: { user, pass: password },
      tls: { ca: readFileSync(info.caFile, 'utf8') },
      logger: false,
    });
    await client.connect();
    try {
      const names = (await client.list()).map((box) => box.path).sort();
      expect(names).toEqual(
        expect.arrayContaining([
          topic,
          `${topic}.audit`,
          `${topic}.audit.Archive`,
          `${topic}.audit.Junk`,
          `${topic}.default`,
          `${topic}.default.Archive`,
          `${topic}.default.Junk`,
          `${topic}.default.Quarantine`,
        ]),
      );
      const count = async (path: string) => {
        const status = await client.status(path, { messages: true });
        return status === false ? -1 : status.messages;
      };
      expect(await count(topic)).toBe(4);
      expect(await count(`${topic}.default`)).toBe(3);
      expect(await count(`${topic}.default.Junk`)).toBe(1);
      expect(await count(`${topic}.audit`)).toBe(0);
      expect(await count(`${topic}.audit.Archive`)).toBe(4);

      const lock = await client.getMailboxLock(`${topic}.audit.Archive`);
      try {
        const flags: string[][] = [];
        for await (const message of client.fetch('1:*', { flags: true })) {
          flags.push([...(message.flags ?? [])].sort());
        }
        expect(flags).toHaveLength(4);
        expect(flags.every((f) => f.includes('\\Seen'))).toBe(true);
        expect(flags.filter((f) => f.includes('\\Flagged'))).toHaveLength(1);
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }

    // mailbus itself, reading the same Maildir through Dovecot, counts the same queue.
    const remote = await connect({
      url: `imap://${user}@${info.host}:${info.imapPort}`,
      password,
      tlsCaFile: info.caFile,
    });
    try {
      expect(await remote.stats(topic)).toEqual(localStats);
    } finally {
      await remote.close();
    }
  });
});
