// One suite of behaviour that every store must show, run against the Maildir store and against
// Dovecot over IMAP. It speaks only the Store interface.

import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { composeMessage } from '../../src/message/compose.js';
import type { ComposedMessage } from '../../src/message/compose.js';
import type { OutgoingMessage } from '../../src/message/message.js';
import { readQuarantined, releasedCopy } from '../../src/security/quarantine.js';
import type { Claim, Claimer, SearchQuery, Store } from '../../src/store/store.js';

export function uniqueTopic(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

export async function compose(
  topic: string,
  messages: OutgoingMessage[],
): Promise<ComposedMessage[]> {
  const options = { from: 'test <test@example.org>', maxMessageBytes: 1 << 20 };
  return Promise.all(messages.map((message) => composeMessage(topic, message, options)));
}

function idOf(claim: Pick<Claim, 'raw' | 'location'>): string {
  const match = /^Message-ID:\s*<([^>]+)>/im.exec(claim.raw.toString('latin1'));
  return match?.[1] ?? '';
}

/** Claims until `count` claims were made or nothing more arrives for a while. */
async function claimAll(claimer: Claimer, count: number, batch = 50): Promise<Claim[]> {
  const claims: Claim[] = [];
  let emptyRounds = 0;
  while (claims.length < count && emptyRounds < 20) {
    const got = await claimer.claim(batch);
    claims.push(...got);
    emptyRounds = got.length === 0 ? emptyRounds + 1 : 0;
    if (got.length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return claims;
}

export function describeStoreConformance(name: string, openStore: () => Promise<Store>): void {
  describe(`${name} store conformance`, () => {
    const opened: Store[] = [];
    const open = async (): Promise<Store> => {
      const store = await openStore();
      opened.push(store);
      return store;
    };
    afterAll(async () => {
      await Promise.all(opened.map((store) => store.close()));
    });

    it('stores, claims and acks messages, and counts them at each step', async () => {
      const store = await open();
      const topic = uniqueTopic('basic');
      const messages = await compose(topic, [{ payload: { n: 1 } }, { payload: { n: 2 } }]);
      await store.append(topic, messages);

      expect(await store.listGroups(topic)).toEqual(['default']);
      expect(await store.listTopics()).toContain(topic);
      expect(await store.stats(topic)).toEqual([
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

      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const claims = await claimAll(claimer, 2);
      expect(claims.map(idOf).sort()).toEqual(messages.map((m) => m.id).sort());
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 0, inFlight: 2 });

      await claimer.ack(claims);
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 0, inFlight: 0, handled: 2 });
      expect(await claimer.claim(10)).toEqual([]);
      await claimer.close();
    });

    it('counts the consumers of each group seen recently, and forgets one that stops', async () => {
      const store = await open();
      const topic = uniqueTopic('consumers');
      await store.ensureTopic(topic);
      await store.subscribe(topic, 'billing');
      const consumersOf = async (): Promise<Record<string, number>> =>
        Object.fromEntries((await store.stats(topic)).map((row) => [row.group, row.consumers]));
      expect(await consumersOf()).toEqual({ billing: 0, default: 0 });

      const first = await store.claimer(topic, 'default', { consumer: 'c1' });
      const second = await store.claimer(topic, 'default', { consumer: 'c2' });
      const billing = await store.claimer(topic, 'billing', { consumer: 'c1' });
      await Promise.all([first.heartbeat(), second.heartbeat(), billing.heartbeat()]);
      expect(await consumersOf()).toEqual({ billing: 1, default: 2 });

      await first.close();
      expect(await consumersOf()).toEqual({ billing: 1, default: 1 });
      await Promise.all([second.close(), billing.close()]);
      expect(await consumersOf()).toEqual({ billing: 0, default: 0 });
    });

    it('gives every subscribed group its own copy, and none to a later group', async () => {
      const store = await open();
      const topic = uniqueTopic('fanout');
      await store.ensureTopic(topic);
      await store.subscribe(topic, 'analytics');
      await store.append(topic, await compose(topic, [{ payload: 1 }, { payload: 2 }]));
      await store.subscribe(topic, 'late');

      const byGroup = Object.fromEntries(
        (await store.stats(topic)).map((row) => [row.group, row.waiting]),
      );
      expect(byGroup).toEqual({ analytics: 2, default: 2, late: 0 });

      const claimer = await store.claimer(topic, 'analytics', { consumer: 'c1' });
      const claims = await claimAll(claimer, 2);
      expect(claims).toHaveLength(2);
      await claimer.ack(claims);
      await claimer.close();
      const after = await store.stats(topic);
      expect(after.find((row) => row.group === 'default')?.waiting).toBe(2);
    });

    it('puts a released message back, as it was or rewritten', async () => {
      const store = await open();
      const topic = uniqueTopic('release');
      const [message] = await compose(topic, [{ payload: { retry: true } }]);
      await store.append(topic, [message as ComposedMessage]);
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });

      const [first] = await claimAll(claimer, 1);
      await claimer.release(first as Claim);
      const [second] = await claimAll(claimer, 1);
      expect(second?.raw.equals(message?.raw as Buffer)).toBe(true);

      const rewritten = Buffer.concat([Buffer.from('X-Test-Rewritten: yes\r\n'), message!.raw]);
      await claimer.release(second as Claim, { raw: rewritten });
      const [third] = await claimAll(claimer, 1);
      expect(third?.raw.toString()).toContain('X-Test-Rewritten: yes');
      expect(idOf(third as Claim)).toBe(message?.id);

      await claimer.ack([third as Claim]);
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 0, inFlight: 0, handled: 1 });
      await claimer.close();
    });

    it('moves a dead letter to the dead-letter mailbox', async () => {
      const store = await open();
      const topic = uniqueTopic('dead');
      await store.append(topic, await compose(topic, [{ payload: 'poison' }]));
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const [claim] = await claimAll(claimer, 1);
      await claimer.deadLetter(claim as Claim, Buffer.from('Subject: report\r\n\r\nfailed\r\n'));
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 0, inFlight: 0, dead: 1 });
      await claimer.close();
    });

    it('quarantines a message, lists it in quarantine and restores it to the group', async () => {
      const store = await open();
      const topic = uniqueTopic('quarantine');
      const [message] = await compose(topic, [{ payload: 'forged' }]);
      await store.append(topic, [message as ComposedMessage]);
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const [claim] = await claimAll(claimer, 1);
      const verdict = { reason: 'unsigned' as const, detail: 'test' };
      await claimer.quarantine(claim as Claim, verdict);
      expect((await store.stats(topic))[0]).toMatchObject({
        waiting: 0,
        inFlight: 0,
        dead: 0,
        quarantined: 1,
      });

      const place = { topic, group: 'default', folder: 'quarantine' as const };
      const [stored] = await store.list(place);
      expect(releasedCopy(stored?.raw as Buffer).toString('latin1')).toBe(
        (claim as Claim).raw.toString('latin1'),
      );
      expect(await readQuarantined(stored?.raw as Buffer)).toMatchObject({
        reason: 'unsigned',
        detail: 'test',
      });
      await store.restore(topic, 'default', (claim as Claim).raw);
      expect(await store.remove(place, [stored?.ref as string])).toBe(1);
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 1, quarantined: 0 });
      await claimer.close();
    });

    it('tells a replayed id from a fresh one within the window', async () => {
      const store = await open();
      const topic = uniqueTopic('replay');
      await store.ensureTopic(topic);
      const [message] = await compose(topic, [{ payload: 1, id: 'once-only' }]);
      const id = (message as ComposedMessage).id;
      expect(await store.acceptId(topic, 'default', 'never-seen@mailbus', 60_000)).toBe(false);

      // The first acceptance: on IMAP, the message must have been handled (archived) too.
      await store.append(topic, [message as ComposedMessage]);
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const claims = await claimAll(claimer, 1);
      expect(await store.acceptId(topic, 'default', id, 60_000)).toBe(false);
      await claimer.ack(claims);
      expect(await store.acceptId(topic, 'default', id, 60_000)).toBe(true);
      await claimer.close();
    });

    /** Two normal messages, then a high-priority one, each publish on its own. */
    async function normalThenUrgent(
      store: Store,
      topic: string,
    ): Promise<{ normal: ComposedMessage[]; urgent: ComposedMessage[] }> {
      const normal = await compose(topic, [{ payload: 'a' }, { payload: 'b' }]);
      const urgent = await compose(topic, [{ payload: 'urgent', priority: 'high' }]);
      await store.append(topic, normal);
      await store.append(topic, urgent);
      return { normal, urgent };
    }

    it('hands out high-priority messages first', async () => {
      const store = await open();
      const topic = uniqueTopic('priority');
      const { urgent } = await normalThenUrgent(store, topic);
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const [first] = await claimer.claim(1);
      expect(idOf(first as Claim)).toBe(urgent[0]?.id);
      await claimer.ack([first as Claim, ...(await claimAll(claimer, 2))]);
      await claimer.close();
    });

    it('puts high-priority messages first within one claim', async () => {
      const store = await open();
      const topic = uniqueTopic('priority-batch');
      const { normal, urgent } = await normalThenUrgent(store, topic);
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const claims = await claimer.claim(10);
      expect(claims.map(idOf)).toEqual([urgent[0]?.id, normal[0]?.id, normal[1]?.id]);
      await claimer.ack(claims);
      await claimer.close();
    });

    /** Composes `outgoing` and stores each message with an append of its own, in order. */
    async function appendEach(
      store: Store,
      topic: string,
      outgoing: OutgoingMessage[],
    ): Promise<ComposedMessage[]> {
      const messages = await compose(topic, outgoing);
      for (const message of messages) {
        await store.append(topic, [message]);
      }
      return messages;
    }

    it('hands out high-priority keyed messages before older normal ones', async () => {
      const store = await open();
      const topic = uniqueTopic('priority-keys');
      const [f1, , f3] = await appendEach(store, topic, [
        { payload: 'f1', key: 'a', priority: 'high' },
        { payload: 'n2', key: 'b' },
        { payload: 'f3', key: 'c', priority: 'high' },
        { payload: 'n4', key: 'd' },
      ]);
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const first = await claimer.claim(2);
      expect(first.map(idOf)).toEqual([f1?.id, f3?.id]);
      await claimer.ack([...first, ...(await claimAll(claimer, 2))]);
      await claimer.close();
    });

    it('hands out normal messages while the turn of starred ones ahead is held', async () => {
      const store = await open();
      const topic = uniqueTopic('priority-turns');
      const [f1, f2, n3] = await appendEach(store, topic, [
        { payload: 'f1', key: 'k', priority: 'high' },
        { payload: 'f2', key: 'k', priority: 'high' },
        { payload: 'n3' },
      ]);
      const holder = await store.claimer(topic, 'default', { consumer: 'c1' });
      const other = await store.claimer(topic, 'default', { consumer: 'c2' });
      const held = await holder.claim(1);
      expect(held.map(idOf)).toEqual([f1?.id]);
      // c2 may not take f2 while f1 holds the key's turn, but n3 has no key to wait for.
      const next = await other.claim(1);
      expect(next.map(idOf)).toEqual([n3?.id]);
      await holder.ack(held);
      await other.ack(next);
      const last = await claimAll(other, 1);
      expect(last.map(idOf)).toEqual([f2?.id]);
      await other.ack(last);
      await holder.close();
      await other.close();
    });

    it('wakes a waiting claimer when a message arrives', async () => {
      const store = await open();
      const topic = uniqueTopic('wake');
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      expect(await claimer.claim(1)).toEqual([]);
      const waitTimeoutMs = 10_000;
      const started = Date.now();
      const waited = claimer.waitForMessages(waitTimeoutMs, new AbortController().signal);
      await store.append(topic, await compose(topic, [{ payload: 'hello' }]));
      await waited;
      expect(Date.now() - started).toBeLessThan(waitTimeoutMs);
      const claims = await claimAll(claimer, 1);
      expect(claims).toHaveLength(1);
      await claimer.ack(claims);
      await claimer.close();
    });

    it('holds a delayed message in Scheduled until its time, then hands it out', async () => {
      const store = await open();
      const topic = uniqueTopic('delay');
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const delayMs = 1500;
      const notBefore = new Date(Date.now() + delayMs);
      const [message] = await compose(topic, [{ payload: 'later' }]);
      await store.append(topic, [message as ComposedMessage], { notBefore });

      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 0, scheduled: 1 });
      expect(await claimer.claim(10)).toEqual([]);

      let claims: Claim[] = [];
      const signal = new AbortController().signal;
      while (claims.length === 0 && Date.now() < notBefore.getTime() + 3000) {
        await claimer.waitForMessages(1000, signal);
        claims = await claimer.claim(10);
      }
      const handedOutAt = Date.now();
      expect(claims.map(idOf)).toEqual([message?.id]);
      expect(handedOutAt).toBeGreaterThanOrEqual(notBefore.getTime());
      expect(handedOutAt - notBefore.getTime()).toBeLessThan(1500);
      await claimer.ack(claims);
      expect((await store.stats(topic))[0]).toMatchObject({ scheduled: 0, handled: 1 });
      await claimer.close();
    });

    it('puts a released message in Scheduled when it has a notBefore', async () => {
      const store = await open();
      const topic = uniqueTopic('backoff');
      await store.append(topic, await compose(topic, [{ payload: 'retry me' }]));
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const [claim] = await claimAll(claimer, 1);
      const notBefore = new Date(Date.now() + 800);
      await claimer.release(claim as Claim, { raw: claim?.raw, notBefore });
      expect((await store.stats(topic))[0]).toMatchObject({ scheduled: 1, inFlight: 0 });
      expect(await claimer.claim(1)).toEqual([]);
      await new Promise((resolve) => setTimeout(resolve, 900));
      const again = await claimAll(claimer, 1);
      expect(again.map(idOf)).toEqual([idOf(claim as Claim)]);
      await claimer.ack(again);
      await claimer.close();
    });

    it('lets a live consumer recover the claims of one that stopped heartbeating', async () => {
      const crashed = await open();
      const survivor = await open();
      const topic = uniqueTopic('lease');
      await crashed.append(topic, await compose(topic, [{ payload: 1 }, { payload: 2 }]));
      const dead = await crashed.claimer(topic, 'default', { consumer: 'dead' });
      await dead.heartbeat();
      const held = await claimAll(dead, 2);
      expect(held).toHaveLength(2);

      const live = await survivor.claimer(topic, 'default', { consumer: 'live' });
      await live.heartbeat();
      expect(await live.recover(60_000)).toEqual([]);
      await new Promise((resolve) => setTimeout(resolve, 1200));
      await live.heartbeat();
      const recovered = await live.recover(1000);
      expect(recovered.map(idOf).sort()).toEqual(held.map(idOf).sort());
      expect(await live.recover(1000)).toEqual([]);

      await expect(dead.ack(held)).rejects.toMatchObject({ code: 'ELEASELOST' });
      await live.ack(recovered);
      expect((await survivor.stats(topic))[0]).toMatchObject({ inFlight: 0, handled: 2 });
      await live.close();
    });

    it('lists, removes, purges and restores the messages of a folder', async () => {
      const store = await open();
      const topic = uniqueTopic('admin');
      const messages = await compose(topic, [{ payload: 'a' }, { payload: 'b' }, { payload: 'c' }]);
      await store.append(topic, messages);
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const claims = await claimAll(claimer, 3);
      for (const claim of claims) {
        await claimer.deadLetter(claim, claim.raw);
      }
      await claimer.close();

      const junk = { topic, group: 'default', folder: 'junk' } as const;
      const listed = await store.list(junk);
      expect(listed.map((m) => idOf({ location: m.location, raw: m.raw })).sort()).toEqual(
        messages.map((m) => m.id).sort(),
      );
      expect(listed.every((m) => Math.abs(m.storedAt.getTime() - Date.now()) < 60_000)).toBe(true);
      expect(await store.list(junk, { limit: 2 })).toHaveLength(2);
      expect((await store.list({ topic, group: 'default', folder: 'topic' })).length).toBe(3);

      expect(await store.remove(junk, [listed[0]?.ref as string])).toBe(1);
      await store.restore(topic, 'default', listed[1]?.raw as Buffer);
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 1, dead: 2 });

      expect(await store.purge(junk, new Date(Date.now() - 60_000))).toBe(0);
      expect(await store.purge(junk, new Date(Date.now() + 60_000))).toBe(2);
      expect((await store.stats(topic))[0]).toMatchObject({ waiting: 1, dead: 0 });
    });

    it('remembers caller-chosen ids for the deduplication window', async () => {
      const store = await open();
      const topic = uniqueTopic('dedup');
      const [chosen] = await compose(topic, [{ payload: 1, id: `order-${topic}` }]);
      const [generated] = await compose(topic, [{ payload: 2 }]);
      await store.append(topic, [chosen as ComposedMessage, generated as ComposedMessage]);

      const ids = [chosen?.id as string, 'never-published@mailbus'];
      expect([...(await store.storedIds(topic, ids, 60_000))]).toEqual([chosen?.id]);
      expect(await store.storedIds(uniqueTopic('no-such-topic'), ids, 60_000)).toEqual(new Set());
      await new Promise((resolve) => setTimeout(resolve, 1100));
      expect(await store.storedIds(topic, ids, 500)).toEqual(new Set());
    });

    it('lets exactly one of four competing claimers have each message', async () => {
      const publisher = await open();
      const topic = uniqueTopic('compete');
      const total = 400;
      const payloads = Array.from({ length: total }, (_, n) => ({ payload: { n } }));
      const messages = await compose(topic, payloads);
      for (let start = 0; start < total; start += 100) {
        await publisher.append(topic, messages.slice(start, start + 100));
      }

      const stores = await Promise.all([open(), open(), open(), open()]);
      const claimers = await Promise.all(
        stores.map((store, i) => store.claimer(topic, 'default', { consumer: `c${i}` })),
      );
      const perClaimer = await Promise.all(
        claimers.map(async (claimer) => {
          const ids: string[] = [];
          for (;;) {
            const claims = await claimer.claim(25);
            if (claims.length === 0) {
              break;
            }
            ids.push(...claims.map(idOf));
            await claimer.ack(claims);
          }
          return ids;
        }),
      );
      const all = perClaimer.flat();
      expect(all).toHaveLength(total);
      expect(new Set(all).size).toBe(total);
      expect((await publisher.stats(topic))[0]).toMatchObject({ waiting: 0, handled: total });
      await Promise.all(claimers.map((claimer) => claimer.close()));
    });

    describe('replay: a new group backfilled from the topic', () => {
      const waiting = (topic: string, group: string) => ({
        topic,
        group,
        folder: 'waiting' as const,
      });
      const idsIn = async (store: Store, topic: string, group: string): Promise<string[]> =>
        (await store.list(waiting(topic, group))).map((m) => idOf({ location: '', raw: m.raw }));

      it('gives a group from earliest every earlier message once, in order, byte for byte', async () => {
        const store = await open();
        const topic = uniqueTopic('replay');
        // Two keys: a key's second message would wait for its first to be acked.
        const outgoing: OutgoingMessage[] = [
          { payload: { n: 1 }, key: 'order-7' },
          { payload: { n: 2 }, priority: 'high' },
          { payload: { n: 3 }, key: 'order-8' },
          { payload: { n: 4 } },
        ];
        const earlier = await compose(topic, outgoing);
        // One publish each, a few ms apart: publish order is then the order of the topic too.
        for (const message of earlier) {
          await store.append(topic, [message]);
          await new Promise((resolve) => setTimeout(resolve, 5));
        }

        expect(await store.subscribe(topic, 'replayed', { from: new Date(0) })).toEqual({
          backfilled: 4,
        });
        expect(await store.subscribe(topic, 'fresh')).toEqual({ backfilled: 0 });
        const later = await compose(topic, [{ payload: { n: 5 } }]);
        await store.append(topic, later);

        const byGroup = Object.fromEntries(
          (await store.stats(topic)).map((row) => [row.group, row.waiting]),
        );
        expect(byGroup).toEqual({ default: 5, fresh: 1, replayed: 5 });
        expect(await idsIn(store, topic, 'fresh')).toEqual(later.map((m) => m.id));

        // Flagged first, then in publish order; each text exactly as published, no attempts.
        const claimer = await store.claimer(topic, 'replayed', { consumer: 'c1' });
        const claims = await claimAll(claimer, 5, 10);
        const all = [...earlier, ...later];
        const expected = [all[1], all[0], all[2], all[3], all[4]];
        expect(claims.map(idOf)).toEqual(expected.map((m) => m?.id));
        claims.forEach((claim, i) =>
          expect(claim.raw.equals(expected[i]?.raw as Buffer)).toBe(true),
        );
        expect(claims.some((claim) => claim.raw.includes('X-Mailbus-Attempts'))).toBe(false);
        await claimer.ack(claims);
        await claimer.close();
      });

      it('gives a group from a time only the messages stored at or after it', async () => {
        const store = await open();
        const topic = uniqueTopic('replay-time');
        const before = await compose(topic, [{ payload: 'old 1' }, { payload: 'old 2' }]);
        await store.append(topic, before);
        // IMAP dates messages to the second: start the replay in the next one.
        await new Promise((resolve) => setTimeout(resolve, 1050 - (Date.now() % 1000)));
        const from = new Date();
        await new Promise((resolve) => setTimeout(resolve, 20));
        const after = await compose(topic, [{ payload: 'new 1' }, { payload: 'new 2' }]);
        await store.append(topic, after);

        expect(await store.subscribe(topic, 'since', { from })).toEqual({ backfilled: 2 });
        expect((await idsIn(store, topic, 'since')).sort()).toEqual(after.map((m) => m.id).sort());
        const future = new Date(Date.now() + 60_000);
        expect(await store.subscribe(topic, 'future', { from: future })).toEqual({ backfilled: 0 });
      });

      it('refuses a start point for a group that exists already', async () => {
        const store = await open();
        const topic = uniqueTopic('replay-exists');
        await store.append(topic, await compose(topic, [{ payload: 1 }]));
        await expect(
          store.subscribe(topic, 'default', { from: new Date(0) }),
        ).rejects.toMatchObject({
          code: 'EINVALIDOPTION',
          message: expect.stringContaining('exists already'),
        });
        expect(await store.subscribe(topic, 'default')).toEqual({ backfilled: 0 });
        expect((await store.stats(topic))[0]).toMatchObject({ group: 'default', waiting: 1 });
      });

      it('misses and duplicates nothing while publishers run during the backfill', async () => {
        const subscriber = await open();
        const publishers = [await open(), await open()];
        const topic = uniqueTopic('replay-race');
        await subscriber.append(topic, await compose(topic, [{ payload: 'first' }]));

        const published: string[] = [];
        const during: number[] = [];
        let running = true;
        const loops = publishers.map(async (publisher, p) => {
          for (let round = 0; running; round += 1) {
            const batch = await compose(topic, [
              { payload: { p, round } },
              { payload: { p, round } },
            ]);
            await publisher.append(topic, batch);
            published.push(...batch.map((m) => m.id));
          }
        });
        // Several groups, one after another, each subscribed while publishes are under way.
        const groups = ['r1', 'r2', 'r3', 'r4'];
        for (const group of groups) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          const before = published.length;
          await subscriber.subscribe(topic, group, { from: new Date(0) });
          during.push(published.length - before);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
        running = false;
        await Promise.all(loops);

        console.log(`${name}: messages published during each subscribe: ${during.join(', ')}`);
        // The test means something only if publishes ran while groups were being subscribed.
        expect(during.reduce((sum, count) => sum + count, 0)).toBeGreaterThan(0);
        const everything = published.length + 1;
        for (const group of groups) {
          const ids = await idsIn(subscriber, topic, group);
          expect(new Set(ids).size, `${group}: duplicates`).toBe(ids.length);
          expect(ids.length, `${group}: every message of the topic`).toBe(everything);
          expect(published.every((id) => ids.includes(id))).toBe(true);
        }
      });

      it('backfills a few thousand messages quickly, telling its progress', async () => {
        const store = await open();
        const topic = uniqueTopic('replay-large');
        const total = 3000;
        const messages = await compose(
          topic,
          Array.from({ length: total }, (_, n) => ({ payload: { n } })),
        );
        for (let start = 0; start < total; start += 500) {
          await store.append(topic, messages.slice(start, start + 500));
        }

        const started = performance.now();
        const reports: Array<[number, number]> = [];
        const result = await store.subscribe(topic, 'bulk', {
          from: new Date(0),
          onProgress: (done, of) => reports.push([done, of]),
        });
        const ms = Math.round(performance.now() - started);
        console.log(`${name}: backfilled ${result.backfilled} messages in ${ms} ms`);
        expect(result).toEqual({ backfilled: total });
        // From nothing to the total, never backwards, with steps in between.
        expect(reports[0]).toEqual([0, total]);
        expect(reports.at(-1)).toEqual([total, total]);
        expect(reports.every(([, of]) => of === total)).toBe(true);
        expect(reports.every(([done], i) => i === 0 || done >= (reports[i - 1]?.[0] ?? 0))).toBe(
          true,
        );
        expect(reports.length).toBeGreaterThanOrEqual(5);
        expect((await store.stats(topic)).find((row) => row.group === 'bulk')).toMatchObject({
          waiting: total,
        });
        expect(ms).toBeLessThan(10_000);
      });
    });

    it('searches by state, id, key, header, text and time, newest first and paged', async () => {
      const store = await open();
      const topic = uniqueTopic('search');
      await store.subscribe(topic, 'default');
      await store.subscribe(topic, 'audit');
      const messages = await compose(topic, [
        { payload: { sku: 'apple-pie' }, key: 'customer-1', headers: { 'X-Region': 'north' } },
        { payload: { sku: 'banana-bread' }, key: 'customer-2', headers: { 'X-Region': 'South' } },
        { payload: { sku: 'apple-cake' }, key: 'customer-1' },
      ]);
      for (const message of messages) {
        // One append each: the stored times (and UIDs) follow the order of publishing.
        await store.append(topic, [message]);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const claimer = await store.claimer(topic, 'default', { consumer: 'c1' });
      const claims = await claimAll(claimer, 3);
      const [first] = claims.filter((claim) => idOf(claim) === messages[0]?.id);
      await claimer.ack([first as Claim]);
      await claimer.close();
      const ids = (page: { hits: Array<{ raw: Buffer }> }) =>
        page.hits.map((hit) => idOf({ raw: hit.raw, location: '' }));
      const [one, two, three] = messages.map((message) => message.id);

      const all = await store.search({ topic });
      expect(all.total).toBe(6);
      const byState = await store.search({ topic, group: 'default', states: ['handled'] });
      expect(byState).toMatchObject({
        total: 1,
        hits: [{ topic, group: 'default', state: 'handled' }],
      });
      expect(ids(byState)).toEqual([one]);
      expect(ids(await store.search({ topic, group: 'audit', key: 'customer-1' }))).toEqual([
        three,
        one,
      ]);
      const region = { name: 'X-Region', value: 'south' };
      expect(ids(await store.search({ topic, group: 'audit', header: region }))).toEqual([two]);
      expect(ids(await store.search({ topic, group: 'audit', text: 'APPLE' }))).toEqual([
        three,
        one,
      ]);
      expect(ids(await store.search({ topic, id: two as string }))).toEqual([two, two]);

      const paged = await store.search({ topic, group: 'audit' }, { offset: 1, limit: 1 });
      expect(paged.total).toBe(3);
      expect(ids(paged)).toEqual([two]);
      const future = await store.search({ topic, since: new Date(Date.now() + 3_600_000) });
      expect(future).toEqual({ total: 0, hits: [] });
      const past = await store.search({ topic, before: new Date(Date.now() + 3_600_000) });
      expect(past.total).toBe(6);
      await expect(store.search({ topic, states: ['lost' as 'dead'] })).rejects.toThrow(
        /unknown state "lost"/,
      );
    });

    it('finds a key exactly, never a longer key it begins, and big messages by any field', async () => {
      const store = await open();
      const topic = uniqueTopic('search-exact');
      await store.subscribe(topic, 'default');
      const tail = 'x'.repeat(40_000); // past the first read of a Maildir scan
      const messages = await compose(topic, [
        { payload: { n: 1 }, key: 'customer-1' },
        { payload: { n: 2 }, key: 'customer-12' },
        {
          payload: { n: 3, tail, note: 'deep-in-the-tail' },
          key: 'customer-1',
          headers: { 'X-Region': 'far' },
        },
      ]);
      for (const message of messages) {
        await store.append(topic, [message]);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const [one, two, big] = messages.map((message) => message.id);
      const ids = async (query: Omit<SearchQuery, 'topic'>) =>
        (await store.search({ topic, ...query })).hits.map((hit) =>
          idOf({ raw: hit.raw, location: '' }),
        );

      expect(await ids({ key: 'customer-1' })).toEqual([big, one]);
      expect(await ids({ key: 'customer-12' })).toEqual([two]);
      expect(await ids({ key: 'customer' })).toEqual([]);
      expect(await ids({ text: 'DEEP-in-the-tail' })).toEqual([big]);
      expect(await ids({ header: { name: 'X-Region', value: 'FAR' } })).toEqual([big]);
      expect(await ids({ id: big as string, key: 'customer-1' })).toEqual([big]);
      const [hit] = (await store.search({ topic, id: big as string })).hits;
      expect(hit?.raw.equals(messages[2]?.raw as Buffer)).toBe(true);
    });

    it('pauses a group with a mark that stays until it is resumed', async () => {
      const store = await open();
      const topic = uniqueTopic('pause');
      await store.subscribe(topic, 'default');
      expect(await store.isPaused(topic, 'default')).toBe(false);

      await store.setPaused(topic, 'default', true);
      await store.setPaused(topic, 'default', true);
      expect(await store.isPaused(topic, 'default')).toBe(true);
      expect(await store.listGroups(topic)).toEqual(['default']);
      expect((await store.stats(topic)).map((row) => row.group)).toEqual(['default']);

      await store.setPaused(topic, 'default', false);
      await store.setPaused(topic, 'default', false);
      expect(await store.isPaused(topic, 'default')).toBe(false);
    });
  });
}
