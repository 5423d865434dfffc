// The IMAP store against the test Dovecot: the shared conformance suite, then what only IMAP
// has (competing connections, server errors, dropped connections, missing extensions).

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
import { ACTIVE_POLL_WINDOW_MS } from '../../src/store/imap/claimer.js';
import { SHALLOW_MAILBOX_MESSAGES } from '../../src/store/imap/claim.js';
import { appendMessages } from '../../src/store/imap/commands.js';
import { RECONNECT_MAX_DELAY_MS } from '../../src/store/imap/connection.js';
import { heartbeatMessage } from '../../src/store/imap/lease.js';
import { ImapStore } from '../../src/store/imap/imap-store.js';
import { CONSUMERS_SEEN_MS } from '../../src/store/store.js';
import type { Claim, Claimer, SearchQuery, Store } from '../../src/store/store.js';
import { imapConfig, mailServers } from '../support/imap.js';
import { compose, describeStoreConformance, uniqueTopic } from '../support/store-conformance.js';

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

function idOf(claim: Pick<Claim, 'raw' | 'location'>): string {
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
      {
        topic,
        group: 'audit',
        waiting: 3,
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
        waiting: 3,
        scheduled: 0,
        inFlight: 0,
        handled: 0,
        dead: 0,
        quarantined: 0,
        consumers: 0,
      },
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
      scheduled: 0,
      inFlight: 0,
      handled: 3,
      dead: 0,
      quarantined: 0,
      consumers: 1, // w1, still open
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
        {
          topic,
          group: 'default',
          waiting: 0,
          scheduled: 0,
          inFlight: 0,
          handled: 0,
          dead: 0,
          quarantined: 0,
          consumers: 0,
        },
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

  it('hears of new mail at once for a second after a busy moment, then only by IDLE', async () => {
    const records: { role?: string; src?: string; msg?: string }[] = [];
    const logger = pino(
      { level: 'debug' },
      { write: (line: string) => void records.push(JSON.parse(line)) },
    );
    const store = await ImapStore.open(imapConfig(), { logger });
    opened.push(store);
    const publisher = await openStore();
    const topic = uniqueTopic('imap-poll');
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
    const noops = (): number =>
      records.filter((r) => r.role === 'claim' && r.src === 'c' && / NOOP$/.test(r.msg ?? ''))
        .length;

    // Busy: a claim just found a message, so the wait polls and hears of the next one soon
    // (Dovecot tells an IDLE session about 500 ms late).
    await publisher.append(topic, await compose(topic, [{ payload: 'first' }]));
    const first = await claimer.claim(1);
    expect(first).toHaveLength(1);
    await claimer.ack(first);
    const heard: number[] = [];
    for (let n = 0; n < 3; n += 1) {
      const waiting = claimer.waitForMessages(5_000, new AbortController().signal);
      await sleep(30);
      await publisher.append(topic, await compose(topic, [{ payload: n }]));
      const storedAt = performance.now();
      await waiting;
      heard.push(performance.now() - storedAt);
      const claims = await claimer.claim(1);
      expect(claims).toHaveLength(1);
      await claimer.ack(claims);
    }
    expect(Math.min(...heard)).toBeLessThan(250);

    // Quiet: past the poll window, a wait sends no NOOP and hears of new mail through IDLE.
    await sleep(ACTIVE_POLL_WINDOW_MS + 200);
    const before = noops();
    const waiting = claimer.waitForMessages(3_000, new AbortController().signal);
    await sleep(600);
    expect(noops()).toBe(before);
    await publisher.append(topic, await compose(topic, [{ payload: 'quiet' }]));
    const storedAt = performance.now();
    await waiting;
    const idleMs = performance.now() - storedAt;
    expect(idleMs).toBeLessThan(2_500);
    expect(await claimer.claim(1)).toHaveLength(1);

    // Quiet, but the publish goes through the claimer's own store: it wakes the claimer itself.
    await sleep(ACTIVE_POLL_WINDOW_MS + 200);
    const own = claimer.waitForMessages(3_000, new AbortController().signal);
    await store.append(topic, await compose(topic, [{ payload: 'own' }]));
    const ownStoredAt = performance.now();
    await own;
    const ownMs = performance.now() - ownStoredAt;
    expect(ownMs).toBeLessThan(100);
    expect(await claimer.claim(1)).toHaveLength(1);
    console.log(
      `imap wait: new mail heard after ${heard.map((ms) => Math.round(ms)).join(', ')} ms ` +
        `while polling, ${Math.round(idleMs)} ms by IDLE, ${Math.round(ownMs)} ms when ` +
        'published through the same store',
    );
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

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `task` with `mailbox` selected on an inspector session. */
function idOfRaw(raw: Buffer): string {
  return /^Message-ID:\s*<([^>]+)>/im.exec(raw.toString('latin1'))?.[1] ?? '';
}

function ago(ms: number): Date {
  return new Date(Date.now() - ms);
}

async function inMailbox<T>(client: ImapFlow, mailbox: string, task: () => Promise<T>): Promise<T> {
  const lock = await client.getMailboxLock(mailbox);
  try {
    return await task();
  } finally {
    lock.release();
  }
}

/** Claims like claimUntil, but rides out the ECONNECTION of a connection the server closed. */
async function claimThroughDrops(claimer: Claimer, count: number): Promise<Claim[]> {
  const claims: Claim[] = [];
  const deadline = Date.now() + 20_000;
  while (claims.length < count && Date.now() < deadline) {
    try {
      claims.push(...(await claimer.claim(10)));
    } catch (err) {
      if (!isMailbusError(err, 'ECONNECTION')) {
        throw err;
      }
    }
    if (claims.length < count) {
      await claimer.waitForMessages(200, new AbortController().signal);
    }
  }
  return claims;
}

describe('IMAP leases, schedules and folders on Dovecot', () => {
  const leaseMs = 1000;

  it('takes over the claims of a consumer that crashed, and refuses its late ack', async () => {
    const proxy = await startProxy(mailServers().imapPort);
    let revived: Proxy | undefined;
    try {
      const crashing = await openStore({ port: proxy.port });
      const survivor = await openStore();
      const topic = uniqueTopic('imap-crash');
      const messages = await compose(
        topic,
        Array.from({ length: 10 }, (_, n) => ({ payload: { n } })),
      );
      await survivor.append(topic, messages);
      const doomed = await crashing.claimer(topic, 'default', { consumer: 'doomed' });
      await doomed.heartbeat();
      const held = await claimUntil(doomed, 10);
      expect(held).toHaveLength(10);

      // The crash: every connection of the first store drops and none can be made again. Its
      // claimer is never closed, so it releases nothing.
      await proxy.close();
      const rescuer = await survivor.claimer(topic, 'default', { consumer: 'rescuer' });
      expect(await rescuer.recover(leaseMs)).toEqual([]);
      await sleep(1500);
      await rescuer.heartbeat();
      const recovered = await rescuer.recover(leaseMs);
      expect(recovered.map(idOf).sort()).toEqual(messages.map((m) => m.id).sort());
      for (const claim of recovered) {
        expect(claim.location).toMatch(new RegExp(`^${topic}\\.default\\.In-Progress\\.rescuer#`));
      }
      expect(await rescuer.recover(leaseMs)).toEqual([]);

      // The crashed consumer's network comes back: its claims are no longer its own.
      revived = await startProxy(mailServers().imapPort, undefined, proxy.port);
      const late = await caught(doomed.ack(held));
      expect(late).toBeInstanceOf(LeaseLostError);
      expect(late.code).toBe('ELEASELOST');
      await rescuer.ack(recovered);
      expect((await survivor.stats(topic))[0]).toMatchObject({ inFlight: 0, handled: 10 });

      // Its in-progress mailbox and its heartbeats are gone; the rescuer's heartbeat is left.
      const client = await inspector();
      try {
        const inProgress = (await client.list())
          .map((mailbox) => mailbox.path)
          .filter((path) => path.startsWith(`${topic}.default.In-Progress.`));
        expect(inProgress).toEqual([`${topic}.default.In-Progress.rescuer`]);
        const beats = await inMailbox(client, `${topic}.default.Consumers`, () =>
          client.fetchAll('1:*', { envelope: true }),
        );
        expect(beats.map((beat) => beat.envelope?.subject)).toEqual(['consumer rescuer']);
      } finally {
        await client.logout();
      }
      await rescuer.close();
    } finally {
      await proxy.close();
      await revived?.close();
    }
  });

  it('hands each claim of a dead consumer to exactly one of three racing recoverers', async () => {
    const total = 30;
    const proxy = await startProxy(mailServers().imapPort);
    try {
      const crashing = await openStore({ port: proxy.port });
      const topic = uniqueTopic('imap-takeover-race');
      const messages = await compose(
        topic,
        Array.from({ length: total }, (_, n) => ({ payload: { n } })),
      );
      await crashing.append(topic, messages);
      const doomed = await crashing.claimer(topic, 'default', { consumer: 'doomed' });
      expect(await claimUntil(doomed, total)).toHaveLength(total);
      await proxy.close();

      const stores = await Promise.all([openStore(), openStore(), openStore()]);
      const rescuers = await Promise.all(
        stores.map((store, i) => store.claimer(topic, 'default', { consumer: `rescuer${i}` })),
      );
      await sleep(leaseMs + 200);
      await Promise.all(rescuers.map((rescuer) => rescuer.heartbeat()));
      const first = await Promise.all(rescuers.map((rescuer) => rescuer.recover(leaseMs)));
      const second = await Promise.all(rescuers.map((rescuer) => rescuer.recover(leaseMs)));

      const ids = [...first, ...second].flat().map(idOf);
      expect(ids).toHaveLength(total);
      expect(new Set(ids)).toEqual(new Set(messages.map((m) => m.id)));
      await Promise.all(rescuers.map((rescuer, i) => rescuer.ack(first[i] ?? [])));
      expect((await stores[0]!.stats(topic))[0]).toMatchObject({ inFlight: 0, handled: total });
      await Promise.all(rescuers.map((rescuer) => rescuer.close()));
    } finally {
      await proxy.close();
    }
  });

  it('hands a scheduled message out only once it is due, within 1.5 s, promoted once', async () => {
    const stores = [await openStore(), await openStore()];
    const topic = uniqueTopic('imap-schedule');
    await stores[0]!.ensureTopic(topic);
    const claimers = await Promise.all(
      stores.map((store, i) => store.claimer(topic, 'default', { consumer: `p${i}` })),
    );
    const messages = await compose(
      topic,
      Array.from({ length: 10 }, (_, n) => ({ payload: { n } })),
    );
    const notBefore = new Date(Date.now() + 1500);
    await stores[0]!.append(topic, messages, { notBefore });
    expect((await stores[0]!.stats(topic))[0]).toMatchObject({ waiting: 0, scheduled: 10 });

    // Each group's copy is dated when it falls due (rounded up to the second); the topic's
    // copy is stored as usual.
    const client = await inspector();
    try {
      const scheduled = await inMailbox(client, `${topic}.default.Scheduled`, () =>
        client.fetchAll('1:*', { internalDate: true }),
      );
      for (const message of scheduled) {
        const due = new Date(message.internalDate ?? 0).getTime();
        expect(due).toBeGreaterThanOrEqual(notBefore.getTime());
        expect(due - notBefore.getTime()).toBeLessThan(1000);
      }
      expect(await messageCount(client, topic)).toBe(10);
    } finally {
      await client.logout();
    }

    // Both claimers poll as a worker does; each claim must come after the message's time.
    const claimed: { id: string; atMs: number }[] = [];
    const signal = new AbortController().signal;
    const deadline = notBefore.getTime() + 4000;
    await Promise.all(
      claimers.map(async (claimer) => {
        while (claimed.length < messages.length && Date.now() < deadline) {
          const claims = await claimer.claim(3);
          const atMs = Date.now();
          claimed.push(...claims.map((claim) => ({ id: idOf(claim), atMs })));
          await claimer.ack(claims);
          if (claims.length === 0) {
            await claimer.waitForMessages(1000, signal);
          }
        }
      }),
    );
    expect(claimed.map((c) => c.id).sort()).toEqual(messages.map((m) => m.id).sort());
    const firstAtMs = Math.min(...claimed.map((c) => c.atMs));
    expect(firstAtMs).toBeGreaterThanOrEqual(notBefore.getTime());
    expect(firstAtMs - notBefore.getTime()).toBeLessThan(1500);
    expect((await stores[0]!.stats(topic))[0]).toMatchObject({ scheduled: 0, handled: 10 });
    await Promise.all(claimers.map((claimer) => claimer.close()));
  });

  it('keeps high priority through Scheduled, for delays and for retries', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-schedule-priority');
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
    const normal = await compose(topic, [{ payload: 'a' }, { payload: 'b' }]);
    const [urgent] = await compose(topic, [{ payload: 'urgent', priority: 'high' }]);
    const notBefore = new Date(Date.now() + 500);
    await store.append(topic, normal, { notBefore });
    await store.append(topic, [urgent!], { notBefore });
    await sleep(1100);

    const [first] = await claimUntil(claimer, 1, 1);
    expect(idOf(first!)).toBe(urgent?.id);
    // A retry in backoff keeps it too.
    await claimer.release(first!, { notBefore: new Date(Date.now() + 300) });
    await claimer.ack(await claimUntil(claimer, 2, 2));
    await sleep(1100);
    const [again] = await claimUntil(claimer, 1, 1);
    expect(idOf(again!)).toBe(urgent?.id);
    await claimer.ack([again!]);
    await claimer.close();
  });

  it('frees messages stranded with the claim or promote keyword after a lease', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-stranded');
    const [waiting, scheduled] = await compose(topic, [{ payload: 'w' }, { payload: 's' }]);
    await store.append(topic, [waiting!]);
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });

    // A claimer that died between its STORE and its MOVE, and a promoter likewise, of a
    // message due a minute ago.
    const client = await inspector();
    try {
      await inMailbox(client, `${topic}.default`, () =>
        client.messageFlagsAdd('1:*', ['$MailbusClaimed']),
      );
      const past = new Date(Date.now() - 60_000);
      await client.append(
        `${topic}.default.Scheduled`,
        scheduled!.raw,
        ['$MailbusPromoting'],
        past,
      );
    } finally {
      await client.logout();
    }
    expect(await claimer.claim(10)).toEqual([]);
    expect(await claimer.recover(leaseMs)).toEqual([]);
    expect(await claimer.claim(10)).toEqual([]);

    await sleep(leaseMs + 100);
    // Freed, not returned: they were never handed out, so no attempt was made.
    expect(await claimer.recover(leaseMs)).toEqual([]);
    const claims = await claimUntil(claimer, 2);
    expect(claims.map(idOf).sort()).toEqual([waiting!.id, scheduled!.id].sort());
    await claimer.ack(claims);
    await claimer.close();
  });

  it('claims messages that another session frees below where its search has got to', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-window');
    // Enough messages that claims search from a floor, not the whole mailbox.
    const count = SHALLOW_MAILBOX_MESSAGES + 100;
    const messages = await compose(
      topic,
      Array.from({ length: count }, (_, i) => ({ payload: `m${i}` })),
    );
    await store.append(topic, messages);
    const ids = messages.map((message) => message.id);
    const client = await inspector();
    try {
      // The first five look taken by a consumer that died between its STORE and its MOVE.
      await inMailbox(client, `${topic}.default`, () =>
        client.messageFlagsAdd('1:5', ['$MailbusClaimed']),
      );
      const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
      const first = [...(await claimer.claim(10)), ...(await claimer.claim(10))];
      expect(first.map(idOf).sort()).toEqual(ids.slice(5, 25).sort());

      // Another consumer's stranded watch frees them: this claimer's next searches start
      // above them, and the server's report of the change sends it back to UID 1.
      await inMailbox(client, `${topic}.default`, () =>
        client.messageFlagsRemove('1:5', ['$MailbusClaimed']),
      );
      const rest = await claimer.claim(10);
      expect(rest.map(idOf).sort()).toEqual([...ids.slice(0, 5), ...ids.slice(25, 30)].sort());

      await claimer.ack([...first, ...rest]);
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: count - 30, handled: 30 });
      await claimer.close();
    } finally {
      await client.logout();
    }
  });

  it('claims past a message whose key waits for its turn at the bottom of a deep mailbox', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-window-turn');
    const keyed = await compose(topic, [
      { payload: 'k1', key: 'k' },
      { payload: 'k2', key: 'k' },
    ]);
    // Fillers enough to empty the first range of a search from UID 1 once claimed, and more
    // behind them to keep the mailbox deep enough to be searched by window.
    const fillers = await compose(
      topic,
      Array.from({ length: 1_023 }, (_, i) => ({ payload: `f${i}` })),
    );
    const later = await compose(
      topic,
      Array.from({ length: SHALLOW_MAILBOX_MESSAGES + 200 }, (_, i) => ({ payload: `l${i}` })),
    );
    for (const batch of [keyed, fillers, later]) {
      await store.append(topic, batch);
    }

    // One consumer holds k1, and with it the key's turn, and takes every filler (and perhaps
    // a few of the later ones: its batches are of 100).
    const holder = await store.claimer(topic, 'default', { consumer: 'w1' });
    const held: Claim[] = [];
    const heldIds = new Set<string>();
    const fillerIds = fillers.map((message) => message.id);
    for (let round = 0; round < 50 && !fillerIds.every((id) => heldIds.has(id)); round += 1) {
      const claims = await holder.claim(100);
      held.push(...claims);
      claims.forEach((claim) => heldIds.add(idOf(claim)));
    }
    expect(fillerIds.every((id) => heldIds.has(id))).toBe(true);
    expect(heldIds.has(keyed[0]!.id)).toBe(true);
    expect(heldIds.has(keyed[1]!.id)).toBe(false);

    // Another one's first range finds only k2, which waits for k1: the messages of its next
    // range, stored later (with higher MODSEQs), are still its to claim.
    const other = await store.claimer(topic, 'default', { consumer: 'w2' });
    const claims = await other.claim(10);
    const laterIds = new Set(later.map((message) => message.id));
    expect(claims.length).toBeGreaterThan(0);
    expect(claims.every((claim) => laterIds.has(idOf(claim)) && !heldIds.has(idOf(claim)))).toBe(
      true,
    );

    await holder.ack(held);
    await other.ack(claims);
    await holder.close();
    await other.close();
  });

  it('adopts messages of its own in-progress mailbox that no claim handed out', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-orphan');
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
    const [message] = await compose(topic, [{ payload: 'lost answer' }]);
    // What a claim leaves when its MOVE landed but its answer never came back.
    const client = await inspector();
    try {
      await client.append(`${topic}.default.In-Progress.w1`, message!.raw, ['$MailbusClaimed']);
    } finally {
      await client.logout();
    }

    const adopted = await claimer.recover(60_000);
    expect(adopted.map(idOf)).toEqual([message!.id]);
    expect(adopted[0]?.location).toMatch(new RegExp(`^${topic}\\.default\\.In-Progress\\.w1#`));
    expect(await claimer.recover(60_000)).toEqual([]);
    await claimer.ack(adopted);
    expect((await store.stats(topic))[0]).toMatchObject({ inFlight: 0, handled: 1 });
    await claimer.close();
  });

  it('carries on when the group mailbox is deleted and recreated under its claimer', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-uidvalidity');
    const messages = await compose(topic, [{ payload: 1 }, { payload: 2 }, { payload: 3 }]);
    await store.append(topic, messages.slice(0, 1));
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
    const [held] = await claimUntil(claimer, 1);

    const group = `${topic}.default`;
    const client = await inspector();
    try {
      const before = await client.status(group, { uidValidity: true });
      await client.mailboxDelete(group);
      await client.mailboxCreate(group);
      const after = await client.status(group, { uidValidity: true });
      expect(after && after.uidValidity).not.toBe(before && before.uidValidity);
    } finally {
      await client.logout();
    }

    // New messages in the new mailbox are claimed; the claim held from before still settles,
    // and a release lands in the new mailbox.
    await store.append(topic, messages.slice(1, 2));
    const [fresh] = await claimThroughDrops(claimer, 1);
    expect(idOf(fresh!)).toBe(messages[1]?.id);
    await claimer.release(held!);
    const [again] = await claimThroughDrops(claimer, 1);
    expect(idOf(again!)).toBe(messages[0]?.id);
    await claimer.ack([fresh!, again!]);
    expect((await store.stats(topic))[0]).toMatchObject({ waiting: 0, inFlight: 0, handled: 2 });
    await claimer.close();
  });

  it('shows live consumers as heartbeats in Consumers, the newest of each', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-heartbeats');
    const alpha = await store.claimer(topic, 'default', { consumer: 'alpha' });
    const beta = await store.claimer(topic, 'default', { consumer: 'beta' });
    for (let i = 0; i < 3; i += 1) {
      await alpha.heartbeat();
      await beta.heartbeat();
    }
    expect(await alpha.recover(60_000)).toEqual([]);

    const subjects = async (): Promise<string[]> => {
      const client = await inspector();
      try {
        const beats = await inMailbox(client, `${topic}.default.Consumers`, () =>
          client.fetchAll('1:*', { envelope: true }),
        );
        return beats.map((beat) => beat.envelope?.subject ?? '').sort();
      } finally {
        await client.logout();
      }
    };
    expect(await subjects()).toEqual(['consumer alpha', 'consumer beta']);
    // A consumer that closes cleanly takes its heartbeats with it.
    await beta.close();
    expect(await subjects()).toEqual(['consumer alpha']);
    await alpha.close();
  });

  it('counts a consumer that crashed until its last heartbeat is older than the window', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-seen');
    const live = await store.claimer(topic, 'default', { consumer: 'live' });
    // The heartbeats two crashed consumers left behind: one a minute inside the window, one
    // a minute past it, and an older one of the first, which only its newest supersedes.
    const mailbox = `${topic}.default.Consumers`;
    const client = await inspector();
    try {
      const beat = (consumer: string, agoMs: number) =>
        client.append(mailbox, heartbeatMessage(consumer, topic, 'default', ago(agoMs)));
      await beat('crashed', CONSUMERS_SEEN_MS + 120_000);
      await beat('crashed', CONSUMERS_SEEN_MS - 60_000);
      await beat('gone', CONSUMERS_SEEN_MS + 60_000);
    } finally {
      await client.logout();
    }

    expect((await store.stats(topic))[0]).toMatchObject({ group: 'default', consumers: 2 });
    await live.close();
    expect((await store.stats(topic))[0]).toMatchObject({ consumers: 1 });
  });

  it('pages a search over several mailboxes newest first, reading the dates of few', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-pages');
    await store.subscribe(topic, 'default');
    // INTERNALDATE has whole seconds: a second apart, the four are in a known order.
    const messages = await compose(
      topic,
      [1, 2, 3, 4].map((n) => ({ payload: { n } })),
    );
    for (const message of messages) {
      await store.append(topic, [message]);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
    }
    const claimer = await store.claimer(topic, 'default', { consumer: 'pager' });
    const claims = await claimUntil(claimer, 2, 2);
    await claimer.ack(claims);
    await claimer.close();
    const [one, two, three, four] = messages.map((message) => message.id);
    expect((await store.stats(topic))[0]).toMatchObject({ waiting: 2, handled: 2 });

    // The first page needs only the newest of each mailbox, which the server sorts out.
    const page = async (offset: number, limit: number) => {
      const found = await store.search({ topic, group: 'default' }, { offset, limit });
      return { total: found.total, ids: found.hits.map((hit) => idOfRaw(hit.raw)) };
    };
    expect(await page(0, 1)).toEqual({ total: 4, ids: [four] });
    expect(await page(1, 1)).toEqual({ total: 4, ids: [three] });
    expect(await page(0, 3)).toEqual({ total: 4, ids: [four, three, two] });
    expect(await page(3, 25)).toEqual({ total: 4, ids: [one] });
  });

  it('orders a search by INTERNALDATE, ties of one second by UID, and pages deep exactly', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-ties');
    await store.subscribe(topic, 'default');
    const messages = await compose(
      topic,
      [1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => ({ payload: { n } })),
    );
    const [w1, w2, w3, w4, w5, w6, late, early, mid] = messages.map((message) => message.id);
    // Six waiting messages of one second (as a MULTIAPPEND stores them), and handled ones
    // moved there later with the dates they were first stored at, before and after those.
    const second = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    const at = (offsetMs: number) => new Date(second.getTime() + offsetMs);
    const client = await inspector();
    try {
      for (const message of messages.slice(0, 6)) {
        await client.append(`${topic}.default`, message.raw, [], second);
      }
      await client.mailboxCreate(`${topic}.default.Archive`).catch(() => undefined);
      for (const [message, date] of [
        [messages[6], at(5_000)],
        [messages[7], at(-5_000)],
        [messages[8], at(2_000)],
      ] as const) {
        await client.append(`${topic}.default.Archive`, message!.raw, [], date);
      }
    } finally {
      await client.logout();
    }

    const search = async (query: Omit<SearchQuery, 'topic'>, offset = 0, limit = 25) => {
      const found = await store.search({ topic, ...query }, { offset, limit });
      return { total: found.total, ids: found.hits.map((hit) => idOfRaw(hit.raw)) };
    };
    const newestFirst = [late, mid, w6, w5, w4, w3, w2, w1, early];
    expect(await search({ group: 'default' })).toEqual({ total: 9, ids: newestFirst });
    for (const [offset, limit] of [
      [0, 3],
      [2, 2],
      [4, 3],
      [7, 5],
      [9, 1],
    ] as const) {
      expect(await search({ group: 'default' }, offset, limit)).toEqual({
        total: 9,
        ids: newestFirst.slice(offset, offset + limit),
      });
    }
    // One mailbox is in date order too (handled in the order published), not in UID order.
    expect(await search({ states: ['handled'] })).toEqual({ total: 3, ids: [late, mid, early] });

    // Whole seconds: a message stored in the second `second` is at its start.
    expect(await search({ since: second, before: at(1) })).toMatchObject({ total: 6 });
    expect(await search({ since: at(1), before: at(5_000) })).toEqual({ total: 1, ids: [mid] });
    expect(await search({ since: at(1), before: at(5_001) })).toEqual({
      total: 2,
      ids: [late, mid],
    });
    expect(await search({ since: at(-5_000), before: second })).toEqual({
      total: 1,
      ids: [early],
    });
    expect(await search({ since: at(-4_999), before: at(2_000) }, 1, 2)).toEqual({
      total: 6,
      ids: [w5, w4],
    });
  });

  it('pages deep into two large mailboxes exactly, ties across them in mailbox order', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-deep');
    await store.subscribe(topic, 'default');
    // 3,000 waiting and 3,000 handled messages whose dates interleave, three or five a second,
    // so ties fall within and across the mailboxes: too many to merge them all for a deep page.
    const base = Math.floor(Date.now() / 1000) * 1000 - 86_400_000;
    const stored: Array<{ id: string; storedAtMs: number; uid: number; order: number }> = [];
    const client = await inspector();
    try {
      await client.mailboxCreate(`${topic}.default.Archive`).catch(() => undefined);
      for (const [order, mailbox, perSecond] of [
        [0, `${topic}.default`, 3],
        [1, `${topic}.default.Archive`, 5],
      ] as const) {
        const count = 3_000;
        const messages = await compose(
          topic,
          Array.from({ length: count }, (_, n) => ({ payload: { order, n } })),
        );
        const dates = messages.map((_, n) => base + Math.floor((n * 5) / perSecond) * 1000);
        const uids = await appendMessages(
          client,
          mailbox,
          messages.map((message, n) => ({
            raw: message.raw,
            flags: [],
            internalDate: new Date(dates[n] as number),
          })),
        );
        messages.forEach((message, n) =>
          stored.push({ id: message.id, storedAtMs: dates[n] as number, uid: uids![n]!, order }),
        );
      }
    } finally {
      await client.logout();
    }
    stored.sort((a, b) => b.storedAtMs - a.storedAtMs || b.uid - a.uid || a.order - b.order);

    for (const [offset, limit] of [
      [0, 10],
      [2_999, 25],
      [3_000, 25],
      [4_321, 7],
      [5_990, 25],
    ] as const) {
      const found = await store.search({ topic, group: 'default' }, { offset, limit });
      expect(found.total).toBe(6_000);
      expect(found.hits.map((hit) => idOfRaw(hit.raw))).toEqual(
        stored.slice(offset, offset + limit).map(({ id }) => id),
      );
    }
  });

  it('counts free text exactly past one FETCH of bodies, narrowed by a time range first', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-text');
    await store.subscribe(topic, 'default');
    // More bodies than one FETCH names (5,000); one in 1,000 mentions the word, in any case.
    const base = Math.floor(Date.now() / 1000) * 1000 - 3_600_000;
    const messages = await compose(
      topic,
      Array.from({ length: 5_500 }, (_, n) => ({
        payload: {
          n,
          note: n % 1_000 === 7 ? `a Needle-${Math.floor(n / 1_000) % 2} here` : 'hay',
        },
      })),
    );
    const client = await inspector();
    try {
      await appendMessages(
        client,
        `${topic}.default`,
        messages.map((message, n) => ({
          raw: message.raw,
          flags: [],
          internalDate: new Date(base + n * 1000),
        })),
      );
    } finally {
      await client.logout();
    }
    const idsOf = (ns: number[]) => ns.map((n) => messages[n]!.id);

    const found = await store.search({ topic, text: 'NEEDLE' }, { limit: 3 });
    expect(found.total).toBe(6);
    expect(found.hits.map((hit) => idOfRaw(hit.raw))).toEqual(idsOf([5_007, 4_007, 3_007]));
    const odd = await store.search({ topic, text: 'needle-1' });
    expect(odd.hits.map((hit) => idOfRaw(hit.raw))).toEqual(idsOf([5_007, 3_007, 1_007]));
    const timed = await store.search({
      topic,
      text: 'needle',
      since: new Date(base + 1_007_000),
      before: new Date(base + 4_007_000),
    });
    expect(timed.hits.map((hit) => idOfRaw(hit.raw))).toEqual(idsOf([3_007, 2_007, 1_007]));
  });

  it('searches a header value that is not ASCII, which SORT must be told is UTF-8', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-utf8');
    await store.subscribe(topic, 'default');
    const [zurich, bern] = await compose(topic, [
      { payload: { n: 1 }, headers: { 'X-Region': 'Zürich' } },
      { payload: { n: 2 }, headers: { 'X-Region': 'Bern' } },
    ]);
    await store.append(topic, [zurich!, bern!]);

    const found = await store.search({ topic, header: { name: 'X-Region', value: 'zürich' } });
    expect(found.hits.map((hit) => idOfRaw(hit.raw))).toEqual([zurich!.id]);
  });

  it('lists in-flight messages across consumers, and purges by exact INTERNALDATE', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-folders');
    await store.append(topic, await compose(topic, [{ payload: 1 }, { payload: 2 }]));
    const one = await store.claimer(topic, 'default', { consumer: 'one' });
    const two = await store.claimer(topic, 'default', { consumer: 'two' });
    await claimUntil(one, 1, 1);
    await claimUntil(two, 1, 1);

    const inFlight = { topic, group: 'default', folder: 'in-flight' } as const;
    const listed = await store.list(inFlight);
    expect(listed.map((m) => m.ref.split('#')[0]).sort()).toEqual(['one', 'two']);
    for (const message of listed) {
      const [consumer, uid] = message.ref.split('#');
      expect(message.location).toBe(`${topic}.default.In-Progress.${consumer}#${uid}`);
    }
    expect(await store.remove(inFlight, [listed[0]!.ref])).toBe(1);
    expect(await store.remove(inFlight, [listed[0]!.ref])).toBe(0);
    await expect(store.remove(inFlight, ['7'])).rejects.toMatchObject({ code: 'EINVALIDOPTION' });

    // Two archived messages of the same day, ten minutes apart: SEARCH BEFORE cannot tell them
    // apart, the purge must.
    const [older, newer] = await compose(topic, [{ payload: 'older' }, { payload: 'newer' }]);
    const client = await inspector();
    try {
      const archive = `${topic}.default.Archive`;
      await client.append(archive, older!.raw, ['\\Seen'], new Date(Date.now() - 10 * 60_000));
      await client.append(archive, newer!.raw, ['\\Seen'], new Date());
    } finally {
      await client.logout();
    }
    const archive = { topic, group: 'default', folder: 'archive' } as const;
    expect((await store.list(archive)).map((m) => idOf(m))).toEqual([older!.id, newer!.id]);
    expect(await store.purge(archive, new Date(Date.now() - 5 * 60_000))).toBe(1);
    expect((await store.list(archive)).map((m) => idOf(m))).toEqual([newer!.id]);

    // Scheduled lists the earliest due first, whatever the order of publishing.
    const [late, soon] = await compose(topic, [{ payload: 'late' }, { payload: 'soon' }]);
    await store.append(topic, [late!], { notBefore: new Date(Date.now() + 45 * 60_000) });
    await store.append(topic, [soon!], { notBefore: new Date(Date.now() + 30 * 60_000) });
    const scheduled = { topic, group: 'default', folder: 'scheduled' } as const;
    expect((await store.list(scheduled, { limit: 1 })).map((m) => idOf(m))).toEqual([soon!.id]);
    expect((await store.list(scheduled)).map((m) => idOf(m))).toEqual([soon!.id, late!.id]);
    await one.close();
    await two.close();
  });

  it('schedules past the two hours Dovecot allows, handing out the text as published', async () => {
    const store = await openStore();
    const topic = uniqueTopic('imap-far');
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });
    const [tomorrow, hopping, arrived] = await compose(topic, [
      { payload: 'tomorrow' },
      { payload: 'hopping' },
      { payload: 'arrived', priority: 'high' },
    ]);
    const dueMs = Date.now() + 24 * 3_600_000;
    await store.append(topic, [tomorrow!], { notBefore: new Date(dueMs) });

    // Dovecot would date it "now": it goes in dated within the hour, its time in a header line.
    const [listed] = await store.list({ topic, group: 'default', folder: 'scheduled' });
    expect(listed?.storedAt.getTime()).toBeGreaterThan(Date.now() + 55 * 60_000);
    expect(listed?.storedAt.getTime()).toBeLessThan(Date.now() + 65 * 60_000);
    expect(listed?.raw.toString('latin1')).toMatch(/^X-Mailbus-Not-Before: \S+\r\n/);
    expect(await claimer.claim(10)).toEqual([]);

    // Copies whose INTERNALDATE came: one still has 2 s to wait, one is due.
    const line = (ms: number): Buffer =>
      Buffer.from(`X-Mailbus-Not-Before: ${new Date(ms).toISOString()}\r\n`, 'latin1');
    const client = await inspector();
    try {
      const past = new Date(Date.now() - 60_000);
      const box = `${topic}.default.Scheduled`;
      const hopAtMs = Date.now() + 2000;
      await client.append(box, Buffer.concat([line(hopAtMs), hopping!.raw]), [], past);
      await client.append(
        box,
        Buffer.concat([line(Date.now()), arrived!.raw]),
        ['\\Flagged'],
        past,
      );
    } finally {
      await client.logout();
    }
    const [first] = await claimUntil(claimer, 1);
    expect(first?.raw.equals(arrived!.raw)).toBe(true);
    const startedMs = Date.now();
    const [second] = await claimUntil(claimer, 1);
    expect(second?.raw.equals(hopping!.raw)).toBe(true);
    expect(Date.now() - startedMs).toBeGreaterThan(1000);
    expect((await store.stats(topic))[0]).toMatchObject({ scheduled: 1 });
    await claimer.ack([first!, second!]);
    await claimer.close();
  });

  it('adds about no round trips to a claim while nothing is scheduled', async () => {
    const records: { role?: string; src?: string; msg?: string }[] = [];
    const logger = pino(
      { level: 'debug' },
      { write: (line: string) => void records.push(JSON.parse(line)) },
    );
    const store = await ImapStore.open(imapConfig(), { logger });
    opened.push(store);
    const topic = uniqueTopic('imap-cost');
    const total = 100;
    await store.append(
      topic,
      await compose(
        topic,
        Array.from({ length: total }, (_, n) => ({ payload: n })),
      ),
    );
    const claimer = await store.claimer(topic, 'default', { consumer: 'w1' });

    records.length = 0;
    const started = performance.now();
    let claims = 0;
    for (;;) {
      const got = await claimer.claim(1);
      if (got.length === 0) {
        break;
      }
      claims += got.length;
      await claimer.ack(got);
    }
    const elapsedMs = performance.now() - started;
    const sent = (role: string): string[] =>
      records
        .filter((r) => r.role === role && r.src === 'c' && typeof r.msg === 'string')
        .map((r) => (r.msg as string).split(' ').slice(1, 3).join(' '))
        .filter((command) => command !== '' && !command.startsWith('DONE'));
    const claimCommands = sent('claim');
    // The promoter's looks at Scheduled; the STATUS of Turns after a claim record is the claim's.
    const statuses = claimCommands.filter(
      (command) => command.startsWith('STATUS') && command.includes('Scheduled'),
    ).length;
    expect(claims).toBe(total);
    expect(statuses).toBeLessThanOrEqual(Math.ceil(elapsedMs / 250) + 1);

    records.length = 0;
    await claimer.heartbeat();
    const heartbeat = sent('settle').length;
    records.length = 0;
    await claimer.recover(60_000);
    const recover = sent('settle').length + sent('claim').length;

    // A message scheduled for later is read once; while Scheduled stays as it was, each look
    // is a STATUS again.
    await store.append(topic, await compose(topic, [{ payload: 'later' }]), {
      notBefore: new Date(Date.now() + 30 * 60_000),
    });
    records.length = 0;
    const idleStarted = performance.now();
    while (performance.now() - idleStarted < 1500) {
      expect(await claimer.claim(1)).toEqual([]);
      await sleep(50);
    }
    const idle = sent('claim');
    const reads = idle.filter((command) => command.startsWith('UID SORT')).length;
    expect(reads).toBe(1);
    console.log(
      `imap cost: ${(claimCommands.length / claims).toFixed(2)} claim-connection commands per ` +
        `claim(1), of which ${(statuses / claims).toFixed(3)} STATUS (${statuses} in ` +
        `${Math.round(elapsedMs)} ms); heartbeat ${heartbeat} command(s); recover ${recover} ` +
        `commands with nothing to recover; with one message scheduled for later, ` +
        `${idle.filter((command) => command.startsWith('STATUS')).length} STATUS and ${reads} ` +
        `read of Scheduled in 1.5 s of empty claims`,
    );
    await claimer.close();
  });
});
