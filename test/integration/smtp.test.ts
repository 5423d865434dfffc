// Publishing through SMTP: the real Postfix fans one submission out to the topic and group
// mailboxes in Dovecot; a local smtp-server stands in where Postfix cannot (STARTTLS, AUTH).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpConfig } from '../../src/config/connection.js';
import { isMailbusError } from '../../src/errors.js';
import type { MailbusError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { ImapStore } from '../../src/store/imap/imap-store.js';
import { groupAddress, topicAddress } from '../../src/transport/addresses.js';
import { SmtpPublisher } from '../../src/transport/smtp.js';
import { imapConfig, imapSession, mailServers, queueAddress } from '../support/imap.js';
import { compose, uniqueTopic } from '../support/store-conformance.js';

/** How long Postfix may take to hand a message through LMTP to Dovecot. */
const DELIVERY_TIMEOUT_MS = 20_000;

function smtpConfig(overrides: Partial<SmtpConfig> = {}): SmtpConfig {
  const info = mailServers();
  return {
    host: info.host,
    port: info.smtpPort,
    secure: false,
    tls: { rejectUnauthorized: true },
    ...overrides,
  };
}

async function openStore(): Promise<ImapStore> {
  return await ImapStore.open(imapConfig(), { logger: silentLogger });
}

async function caught(promise: Promise<unknown>): Promise<MailbusError> {
  try {
    await promise;
  } catch (err) {
    if (isMailbusError(err)) {
      return err;
    }
    throw err;
  }
  throw new Error('expected a MailbusError, but the call succeeded');
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Polls the mailboxes' message counts until they reach `count` or the delivery timeout. */
async function waitForCounts(mailboxes: string[], count: number): Promise<Record<string, number>> {
  const client = await imapSession();
  try {
    const deadline = Date.now() + DELIVERY_TIMEOUT_MS;
    for (;;) {
      const counts: Record<string, number> = {};
      for (const mailbox of mailboxes) {
        const status = await client.status(mailbox, { messages: true }).catch((): false => false);
        counts[mailbox] = status ? (status.messages ?? 0) : 0;
      }
      if (Object.values(counts).every((n) => n >= count) || Date.now() > deadline) {
        return counts;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await client.logout();
  }
}

describe('SMTP publisher addresses', () => {
  it('names the topic and group mailboxes in the address detail', () => {
    expect(topicAddress('mailbus@queue.test', 'orders')).toBe('mailbus+orders@queue.test');
    expect(groupAddress('mailbus@queue.test', 'orders', 'billing')).toBe(
      'mailbus+orders.billing@queue.test',
    );
  });

  it('refuses an address that is not plain, or that has a detail already', () => {
    for (const address of ['mailbus', '@queue.test', 'mail bus@queue.test', 'a@b@']) {
      expect(() => topicAddress(address, 'orders')).toThrow(/not a plain email address/);
    }
    expect(() => topicAddress('mailbus+x@queue.test', 'orders')).toThrow(
      /already has a "\+detail"/,
    );
    expect(() => groupAddress('mailbus@queue.test', 'orders', 'Bad.Group')).toThrow(
      expect.objectContaining({ code: 'EINVALIDNAME' }),
    );
  });
});

describe('SMTP publisher through Postfix', () => {
  it('lands one copy in the topic mailbox and in each group mailbox', async () => {
    const store = await openStore();
    const publisher = new SmtpPublisher(smtpConfig(), {
      address: queueAddress(),
      logger: silentLogger,
    });
    try {
      const topic = uniqueTopic('smtp-fanout');
      await store.ensureTopic(topic);
      await store.subscribe(topic, 'billing');
      const groups = await store.listGroups(topic);
      expect(groups).toEqual(['billing', 'default']);
      const messages = await compose(topic, [
        { payload: { order: 1 } },
        { payload: { order: 2 }, priority: 'high' },
      ]);

      await publisher.send(topic, groups, messages);

      const counts = await waitForCounts([topic, `${topic}.default`, `${topic}.billing`], 2);
      expect(counts).toEqual({ [topic]: 2, [`${topic}.default`]: 2, [`${topic}.billing`]: 2 });
      expect(await store.stats(topic)).toEqual([
        {
          topic,
          group: 'billing',
          waiting: 2,
          scheduled: 0,
          inFlight: 0,
          handled: 0,
          dead: 0,
          quarantined: 0,
          consumers: 0,
        },
        {
          topic,
          group: 'default',
          waiting: 2,
          scheduled: 0,
          inFlight: 0,
          handled: 0,
          dead: 0,
          quarantined: 0,
          consumers: 0,
        },
      ]);

      // What arrived is what was sent, below the trace fields the servers add.
      const claimer = await store.claimer(topic, 'billing', { consumer: 'w1' });
      const claims = await claimer.claim(10);
      const ids = claims.map((claim) => /^Message-ID:\s*<([^>]+)>/im.exec(claim.raw.toString()));
      expect(ids.map((match) => match?.[1]).sort()).toEqual(messages.map((m) => m.id).sort());
      await claimer.ack(claims);
      await claimer.close();
    } finally {
      await publisher.close();
      await publisher.close();
      await store.close();
    }
  });

  it('fails with ECONNECTION naming host and port when nothing listens', async () => {
    const port = await closedPort();
    const publisher = new SmtpPublisher(smtpConfig({ port }), {
      address: queueAddress(),
      logger: silentLogger,
    });
    try {
      const topic = uniqueTopic('smtp-closed');
      const messages = await compose(topic, [{ payload: 1 }, { payload: 2 }]);
      const err = await caught(publisher.send(topic, ['default'], messages));
      expect(err.code).toBe('ECONNECTION');
      expect(err.message).toContain(`127.0.0.1:${port}`);
      expect(err.message).toContain('2 of 2 messages');
    } finally {
      await publisher.close();
    }
  });

  it('refuses to send after close', async () => {
    const publisher = new SmtpPublisher(smtpConfig(), {
      address: queueAddress(),
      logger: silentLogger,
    });
    await publisher.close();
    const topic = uniqueTopic('smtp-after-close');
    const err = await caught(publisher.send(topic, [], await compose(topic, [{ payload: 1 }])));
    expect(err.code).toBe('ECLOSED');
  });
});

describe('SMTP publisher with STARTTLS and AUTH', () => {
  const user = 'publisher';
  const password = 'smtp-secret-4d1e';
  let dir: string;
  let ca: string;
  let server: SMTPServer;
  let port: number;
  const received: { secure: boolean; user?: string; from?: string; to: string[] }[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailbus-smtp-tls-'));
    ca = makeCertificates(dir);
    server = new SMTPServer({
      key: readFileSync(join(dir, 'server.key')),
      cert: readFileSync(join(dir, 'server.crt')),
      logger: false,
      onAuth(auth, _session, callback) {
        if (auth.username === user && auth.password === password) {
          callback(null, { user });
        } else {
          callback(new Error('Invalid username or password'));
        }
      },
      onData(stream, session, callback) {
        stream.resume();
        stream.on('end', () => {
          received.push({
            secure: session.secure,
            user: session.user as string | undefined,
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : undefined,
            to: session.envelope.rcptTo.map((rcpt) => rcpt.address),
          });
          callback();
        });
      },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('upgrades with STARTTLS trusting the configured CA, and logs in', async () => {
    const publisher = new SmtpPublisher(
      smtpConfig({ port, user, password, tls: { ca, rejectUnauthorized: true } }),
      { address: 'queue@example.org', logger: silentLogger },
    );
    try {
      const topic = uniqueTopic('smtp-tls');
      await publisher.send(topic, ['default', 'audit'], await compose(topic, [{ payload: 1 }]));
      expect(received.at(-1)).toEqual({
        secure: true,
        user,
        from: 'queue@example.org',
        to: [
          `queue+${topic}@example.org`,
          `queue+${topic}.default@example.org`,
          `queue+${topic}.audit@example.org`,
        ],
      });
    } finally {
      await publisher.close();
    }
  });

  it('refuses a server certificate from an unknown CA', async () => {
    const publisher = new SmtpPublisher(smtpConfig({ port, user, password }), {
      address: 'queue@example.org',
      logger: silentLogger,
    });
    try {
      const topic = uniqueTopic('smtp-badca');
      const err = await caught(publisher.send(topic, [], await compose(topic, [{ payload: 1 }])));
      expect(err.code).toBe('ECONNECTION');
      expect(err.message).toMatch(/certificate/i);
    } finally {
      await publisher.close();
    }
  });

  it('reports a refused login as EAUTH without the password', async () => {
    const wrong = 'not-the-password-93b2';
    const publisher = new SmtpPublisher(
      smtpConfig({ port, user, password: wrong, tls: { ca, rejectUnauthorized: true } }),
      { address: 'queue@example.org', logger: silentLogger },
    );
    try {
      const topic = uniqueTopic('smtp-auth');
      const err = await caught(publisher.send(topic, [], await compose(topic, [{ payload: 1 }])));
      expect(err.code).toBe('EAUTH');
      expect(err.message).toContain(`SMTP login failed for ${user} at 127.0.0.1:${port}`);
      expect(inspect(err, { depth: 10 })).not.toContain(wrong);
    } finally {
      await publisher.close();
    }
  });
});

/** A private CA and a server certificate for 127.0.0.1 signed by it; returns the CA's PEM. */
function makeCertificates(dir: string): string {
  const openssl = (args: string[]): void => {
    const result = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (result.status !== 0) {
      throw new Error(`openssl ${args[0]} failed: ${result.stderr}`);
    }
  };
  writeFileSync(join(dir, 'san.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=test CA'].concat([
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
    ]),
  );
  openssl(
    ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1'].concat([
      '-keyout',
      'server.key',
      '-out',
      'server.csr',
    ]),
  );
  openssl(
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key'].concat([
      '-CAcreateserial',
      '-days',
      '2',
      '-out',
      'server.crt',
      '-extfile',
      'san.cnf',
    ]),
  );
  return readFileSync(join(dir, 'ca.crt'), 'utf8');
}
