// The IMAP store against the test Dovecot: the shared conformance suite, then what only IMAP
// has (competing connections, server errors, dropped connections, missing extensions).

import { readFileSync } from 'node:fs';
import { createServer, connect as connectTcp } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { inspect } from 'node:util';
import { ImapFlow } from 'imapflow';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { ImapConfig } from '../../src/config/connection.js';
import { LeaseLostError, isMailbusError } from '../../src/errors.js';
import type { MailbusError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { RECONNECT_MAX_DELAY_MS } from '../../src/store/imap/connection.js';
import { ImapStore } from '../../src/store/imap/imap-store.js';
import type { Claim, Claimer, Store } from '../../src/store/store.js';
import { mailServers } from '../support/imap.js';
import { compose, describeStoreConformance, uniqueTopic } from '../support/store-conformance.js';

function imapConfig(overrides: Partial<ImapConfig> = {}): ImapConfig {
  const info = mailServers();
  return {
    kind: 'imap',
    host: info.host,
    port: info.imapPort,
    secure: false,
    user: info.user,
    password: info.password,
    tls: { ca: readFileSync(info.caFile, 'utf8'), rejectUnauthorized: true },
    ...overrides,
  };
}

const opened: Store[] = [];
async function openStore(overrides: Partial<ImapConfig> = {}): Promise<ImapStore> {
  const store = await ImapStore.open(imapConfig(overrides), { logger: silentLogger });
  opened.push(store);
  return store;
}
afterAll(async () => {
  await Promise.all(opened.map((store) => store.close()));
});

/** A plain imapflow session on the queue account, to look at mailboxes behind the store. */
async function inspector(): Promise<ImapFlow> {
  const config = imapConfig();
  const client = new ImapFlow({
    host: config.host,
    port: config.port,
    secure: false,
    auth: { user: config.user, pass: config.password },
    tls: { ca: config.tls.ca },
    logger: false,
  });
  await client.connect();
  return client;
}

async function messageCount(client: ImapFlow, mailbox: string): Promise<number> {
  const status = await client.status(mailbox, { messages: true });
  return status ? (status.messages ?? 0) : -1;
}

function idOf(claim: Claim): string {
  return /^Message-ID:\s*<([^>]+)>/im.exec(claim.raw.toString('latin1'))?.[1] ?? '';
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

/** A port on which nothing listens: bound once, then closed. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface Proxy {
  port: number;
  /** Drops every open connection, as a network failure would. */
  cut(): void;
  close(): Promise<void>;
}

/**
 * A TCP proxy to Dovecot. `rewrite` edits what the server sends (plain text only: it is given
 * the chunks as they come, which is good enough for the one-line capability lists it edits).
 */
async function startProxy(
  targetPort: number,
  rewrite?: (text: string) => string,
  listenPort = 0,
): Promise<Proxy> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connectTcp(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    if (rewrite) {
      upstream.on('data', (chunk: Buffer) =>
        client.write(rewrite(chunk.toString('latin1')), 'latin1'),
      );
      upstream.on('end', () => client.end());
    } else {
      upstream.pipe(client);
    }
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(listenPort, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    cut: () => {
      for (const socket of sockets) {
        socket.destroy();
      }
      sockets.clear();
    },
    close: async () => {
      for (const socket of sockets) {
        socket.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function claimUntil(claimer: Claimer, count: number, batch = 50): Promise<Claim[]> {
  const claims: Claim[] = [];
  const deadline = Date.now() + 20_000;
  while (claims.length < count && Date.now() < deadline) {
    const got = await claimer.claim(batch);
    claims.push(...got);
    if (got.length === 0) {
      await claimer.waitForMessages(200, new AbortController().signal);
    }
  }
  return claims;
}

describeStoreConformance('imap', () => openStore());

describe('IMAP store on Dovecot', () => {
  it('publishes, claims and acks, counting each step, and keeps a copy in the topic', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-round');
    await store.ensureTopic(topic);
    await store.subscribe(topic, 'audit');
    const messages = await compose(topic, [{ payload: 1 }, { payload: 2 }, { payload: 3 }]);
    await store.append(topic, messages);

    expect(await store.stats(topic)).toEqual([
      { topic, group: 'audit', waiting: 3, inFlight: 0, handled: 0, dead: 0 },
      { topic, group: 'default', waiting: 3, inFlight: 0, handled: 0, dead: 0 },
    ]);

    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
    const claims = await claimUntil(claimer, 3);
    expect(claims.map(idOf).sort()).toEqual(messages.map((m) => m.id).sort());
    expect(claims[0]?.location).toMatch(new RegExp(`^${topic}\\.default\\.In-Progress\\.w1#\\d+$`));
    expect((await store.stats(topic))[1]).toMatchObject({ waiting: 0, inFlight: 3 });

    await claimer.ack(claims);
    expect((await store.stats(topic))[1]).toEqual({
      topic,
      group: 'default',
      waiting: 0,
      inFlight: 0,
      handled: 3,
      dead: 0,
    });

    const client = await inspector();
    try {
      expect(await messageCount(client, topic)).toBe(3);
      const lock = await client.getMailboxLock(`${topic}.default.Archive`);
      try {
        const archived = await client.fetchAll('1:*', { flags: true });
        expect(archived.every((message) => message.flags?.has('\\Seen'))).toBe(true);
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }

    // Closing removes the consumer's in-progress mailbox, which is empty now.
    await claimer.close();
    await claimer.close();
    const after = await inspector();
    try {
      expect(await after.list()).not.toContainEqual(
        expect.objectContaining({ path: `${topic}.default.In-Progress.w1` }),
      );
    } finally {
      await after.logout();
    }
  });

  it('puts a released message back, where another consumer can claim it', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-release');
    const [message] = await compose(topic, [{ payload: 'again', priority: 'high' }]);
    await store.append(topic, [message!]);

    const first = await store.claimer(topic, 'default', { consumer: 'first' });
    const second = await store.claimer(topic, 'default', { consumer: 'second' });
    const [claim] = await claimUntil(first, 1);
    expect(await second.claim(10)).toEqual([]);

    await first.release(claim!);
    expect((await store.stats(topic))[0]).toMatchObject({ waiting: 1, inFlight: 0 });
    const [again] = await claimUntil(second, 1);
    expect(again?.raw.equals(message!.raw)).toBe(true);

    // A rewritten copy replaces the held one and keeps its high priority (\Flagged).
    const rewritten = Buffer.concat([Buffer.from('X-Attempt: 2\r\n'), message!.raw]);
    await second.release(again!, { raw: rewritten });
    const client = await inspector();
    try {
      const lock = await client.getMailboxLock(`${topic}.default`);
      try {
        const waiting = await client.fetchAll('1:*', { flags: true, source: true });
        expect(waiting).toHaveLength(1);
        expect(waiting[0]?.flags?.has('\\Flagged')).toBe(true);
        expect(waiting[0]?.source?.toString()).toContain('X-Attempt: 2');
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }
    expect((await store.stats(topic))[0]).toMatchObject({ waiting: 1, inFlight: 0 });

    // The old claim is gone: settling it again is a lost lease, not a silent success.
    const lost = await caught(second.ack([again!]));
    expect(lost).toBeInstanceOf(LeaseLostError);
    expect(lost.code).toBe('ELEASELOST');
    expect((lost as LeaseLostError).locations).toEqual([again!.location]);
    await first.close();
    await second.close();
  });

  it('lands a dead letter in the group Junk mailbox', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-dead');
    await store.append(topic, await compose(topic, [{ payload: 'poison' }]));
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
    const [claim] = await claimUntil(claimer, 1);
    const report = Buffer.from('Subject: failed for good\r\nX-Test: dead\r\n\r\nboom\r\n');
    await claimer.deadLetter(claim!, report);

    expect((await store.stats(topic))[0]).toMatchObject({ waiting: 0, inFlight: 0, dead: 1 });
    const client = await inspector();
    try {
      const lock = await client.getMailboxLock(`${topic}.default.Junk`);
      try {
        const [dead] = await client.fetchAll('1:*', { source: true });
        expect(dead?.source?.toString()).toContain('X-Test: dead');
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }
    await claimer.close();
  });

  it('lets each of 1,000 messages be claimed by exactly one of 4 competing stores', async () => {
    const total = 1_000;
    const batch = 100;
    const publisher = await openStore();
    const topic = uniqueTopic('imap-race');
    const messages = await compose(
      topic,
      Array.from({ length: total }, (_, n) => ({ payload: { n } })),
    );
    await publisher.ensureTopic(topic);
    const appendStarted = performance.now();
    for (let start = 0; start < total; start += batch) {
      await publisher.append(topic, messages.slice(start, start + batch));
    }
    const appendMs = performance.now() - appendStarted;

    const stores = await Promise.all([openStore(), openStore(), openStore(), openStore()]);
    const claimers = await Promise.all(
      stores.map((store, i) => store.claimer(topic, 'default', { consumer: `racer${i}` })),
    );
    let claimedSoFar = 0;
    const claimStarted = performance.now();
    const perClaimer = await Promise.all(
      claimers.map(async (claimer) => {
        const ids: string[] = [];
        let idleRounds = 0;
        while (claimedSoFar < total && idleRounds < 20) {
          const claims = await claimer.claim(batch);
          idleRounds = claims.length === 0 ? idleRounds + 1 : 0;
          claimedSoFar += claims.length;
          ids.push(...claims.map(idOf));
          await claimer.ack(claims);
        }
        return ids;
      }),
    );
    const claimMs = performance.now() - claimStarted;

    const all = perClaimer.flat();
    expect(all).toHaveLength(total);
    expect(new Set(all).size).toBe(total);
    expect(new Set(all)).toEqual(new Set(messages.map((m) => m.id)));
    expect(perClaimer.filter((ids) => ids.length > 0).length).toBeGreaterThan(1);
    expect((await publisher.stats(topic))[0]).toMatchObject({
      waiting: 0,
      inFlight: 0,
      handled: total,
    });
    console.log(
      `imap race: APPEND ${Math.round((total / appendMs) * 1000)} messages/s ` +
        `(${total} in batches of ${batch}, topic + 1 group by COPY); ` +
        `claim+ack ${Math.round((total / claimMs) * 1000)} messages/s with 4 claimers ` +
        `(batches of ${batch}; per claimer ${perClaimer.map((ids) => ids.length).join('/')})`,
    );
    await Promise.all(claimers.map((claimer) => claimer.close()));
  });

  it('refuses a wrong password with EAUTH, without the password in the error', async () => {
    const password = `wrong-${Math.random().toString(36).slice(2)}`;
    const err = await caught(ImapStore.open(imapConfig({ password }), { logger: silentLogger }));
    const info = mailServers();
    expect(err.code).toBe('EAUTH');
    expect(err.message).toContain(`IMAP login failed for ${info.user} at ${info.host}:`);
    expect(inspect(err, { depth: 10 })).not.toContain(password);
  });

  it('reports an unreachable server with ECONNECTION naming host and port', async () => {
    const port = await closedPort();
    const err = await caught(ImapStore.open(imapConfig({ port }), { logger: silentLogger }));
    expect(err.code).toBe('ECONNECTION');
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(err.message).toContain('ECONNREFUSED');
  });

  it('refuses a server without CONDSTORE, naming the extension', async () => {
    // The proxy hides STARTTLS (so it can read the rest) and CONDSTORE/QRESYNC.
    const proxy = await startProxy(mailServers().imapPort, (text) =>
      text.replace(/ (STARTTLS|CONDSTORE|QRESYNC)(?=[ \]\r])/g, ''),
    );
    try {
      const err = await caught(
        ImapStore.open(imapConfig({ port: proxy.port }), { logger: silentLogger }),
      );
      expect(err.code).toBe('EPROTOCOL');
      expect(err.message).toContain('lacks the CONDSTORE extension');
    } finally {
      await proxy.close();
    }
  });

  it('claims and publishes without ESEARCH and MULTIAPPEND (plain SEARCH, APPEND)', async () => {
    const proxy = await startProxy(mailServers().imapPort, (text) =>
      text.replace(/ (STARTTLS|ESEARCH|CONTEXT=SEARCH|MULTIAPPEND)(?=[ \]\r])/g, ''),
    );
    try {
      const store = await openStore({ port: proxy.port });
      const topic = uniqueTopic('imap-plain');
      const normal = await compose(topic, [{ payload: 1 }, { payload: 2 }, { payload: 3 }]);
      const urgent = await compose(topic, [{ payload: 'urgent', priority: 'high' }]);
      await store.append(topic, normal);
      await store.append(topic, urgent);
      const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });

      const first = await claimer.claim(2);
      expect(first.map(idOf)).toEqual([urgent[0]?.id, normal[0]?.id]);
      const rest = await claimUntil(claimer, 2);
      expect(rest.map(idOf)).toEqual([normal[1]?.id, normal[2]?.id]);
      await claimer.ack([...first, ...rest]);
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 0, handled: 4 });
      await claimer.close();
    } finally {
      await proxy.close();
    }
  });

  it('publishes to every group by APPEND when the server lacks UIDPLUS', async () => {
    const proxy = await startProxy(mailServers().imapPort, (text) =>
      text.replace(/ (STARTTLS|UIDPLUS)(?=[ \]\r])/g, ''),
    );
    try {
      const store = await openStore({ port: proxy.port });
      const topic = uniqueTopic('imap-nouidplus');
      await store.ensureTopic(topic);
      await store.subscribe(topic, 'audit');
      await store.append(topic, await compose(topic, [{ payload: 1 }, { payload: 2 }]));
      expect((await store.stats(topic)).map((row) => [row.group, row.waiting])).toEqual([
        ['audit', 2],
        ['default', 2],
      ]);
      const err = await caught(store.claimer(topic, 'default', { consumer: 'w1' }));
      expect(err.message).toContain('lacks the UIDPLUS extension');
    } finally {
      await proxy.close();
    }
  });

  it('fails the call that sees a dropped connection with ECONNECTION and reconnects', async () => {
    const proxy = await startProxy(mailServers().imapPort);
    try {
      const store = await openStore({ port: proxy.port });
      const topic = uniqueTopic('imap-drop');
      await store.append(topic, await compose(topic, [{ payload: 1 }]));
      const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });

      proxy.cut();
      // imapflow may notice the close before the next command or during it.
      const during = await claimer.claim(1).then(
        (claims) => claims,
        (err: unknown) => err,
      );
      if (!Array.isArray(during)) {
        expect(isMailbusError(during, 'ECONNECTION')).toBe(true);
      }

      const claims =
        Array.isArray(during) && during.length > 0 ? during : await claimUntil(claimer, 1);
      expect(claims).toHaveLength(1);
      await claimer.ack(claims);
      await store.append(topic, await compose(topic, [{ payload: 2 }]));
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 1, handled: 1 });
      await claimer.close();
    } finally {
      await proxy.close();
    }
  });

  it('fails with ECONNECTION while the server is away, reconnects once it is back', async () => {
    let proxy = await startProxy(mailServers().imapPort);
    const port = proxy.port;
    try {
      const store = await openStore({ port });
      const topic = uniqueTopic('imap-away');
      await store.ensureTopic(topic);

      await proxy.close();
      const away = await caught(store.stats(topic));
      expect(away.code).toBe('ECONNECTION');
      expect(away.message).toContain(`127.0.0.1:${port}`);
      const stillAway = await caught(store.stats(topic));
      expect(stillAway.code).toBe('ECONNECTION');

      // Back on the same port: the next call reconnects after at most the backoff so far.
      proxy = await startProxy(mailServers().imapPort, undefined, port);
      const started = Date.now();
      expect(await store.stats(topic)).toEqual([
        { topic, group: 'default', waiting: 0, inFlight: 0, handled: 0, dead: 0 },
      ]);
      expect(Date.now() - started).toBeLessThan(RECONNECT_MAX_DELAY_MS);
    } finally {
      await proxy.close();
    }
  });

  it('logs imapflow at debug level through our logger, never with the password', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
    const store = await ImapStore.open(imapConfig(), { logger });
    opened.push(store);
    const topic = uniqueTopic('imap-log');
    await store.append(topic, await compose(topic, [{ payload: 1 }]));
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
    await claimer.ack(await claimUntil(claimer, 1));
    await claimer.close();

    const log = lines.join('');
    expect(log).toContain('"sub":"imapflow"');
    expect(log).toContain('UID STORE');
    expect(log).not.toContain(mailServers().password);
  });

  it('ends waitForMessages on timeout and on abort', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-wait');
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
    expect(await claimer.claim(1)).toEqual([]);

    const timeoutStarted = Date.now();
    await claimer.waitForMessages(300, new AbortController().signal);
    expect(Date.now() - timeoutStarted).toBeGreaterThanOrEqual(250);

    const abort = new AbortController();
    const abortStarted = Date.now();
    setTimeout(() => abort.abort(), 100);
    await claimer.waitForMessages(10_000, abort.signal);
    expect(Date.now() - abortStarted).toBeLessThan(5_000);
    await claimer.close();
  });

  it('refuses to settle a claim of another consumer', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-foreign');
    await store.append(topic, await compose(topic, [{ payload: 1 }]));
    const mine = await store.claimer(topic, 'default', { consumer: 'mine' });
    const theirs = await store.claimer(topic, 'default', { consumer: 'theirs' });
    const [claim] = await claimUntil(mine, 1);
    const err = await caught(theirs.ack([claim!]));
    expect(err.code).toBe('EINVALIDOPTION');
    await mine.ack([claim!]);
    await mine.close();
    await theirs.close();
  });
});
