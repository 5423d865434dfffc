import {
  existsSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { MaildirStore } from '../../src/store/maildir/maildir-store.js';
import { CONSUMERS_SEEN_MS } from '../../src/store/store.js';
import { compose, describeStoreConformance, uniqueTopic } from '../support/store-conformance.js';

const root = mkdtempSync(join(tmpdir(), 'mailbus-maildir-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describeStoreConformance('maildir', () =>
  MaildirStore.open(
    { kind: 'maildir', path: join(root, 'queue'), fsync: true },
    {
      logger: silentLogger,
    },
  ),
);

describe('maildir backfill', () => {
  it('waits for a publish under way in the topic tmp/ and then gives the group its message', async () => {
    const path = join(root, 'backfill');
    const store = await MaildirStore.open(
      { kind: 'maildir', path, fsync: false },
      { logger: silentLogger },
    );
    const topic = uniqueTopic('under-way');
    await store.ensureTopic(topic);

    // A publisher that listed the groups before the new one existed, and has not yet moved its
    // message from tmp/ into the inbox.
    const [message] = await compose(topic, [{ payload: 'in flight' }]);
    const name = `${Math.floor(Date.now() / 1000)}.M000000P1Q1Rtest.host,S=1`;
    const tmp = join(path, `.${topic}`, 'tmp', name);
    writeFileSync(tmp, message?.raw as Buffer);

    let settled = false;
    const subscribed = store.subscribe(topic, 'late', { from: new Date(0) }).finally(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(settled).toBe(false);

    renameSync(tmp, join(path, `.${topic}`, 'new', name));
    expect(await subscribed).toEqual({ backfilled: 1 });
    const waiting = await store.list({ topic, group: 'late', folder: 'waiting' });
    expect(waiting.map((stored) => stored.raw.equals(message?.raw as Buffer))).toEqual([true]);
    await store.close();
  });
});

describe('maildir consumers seen recently', () => {
  it('counts a consumer that crashed until its heartbeat is older than the window', async () => {
    const path = join(root, 'consumers');
    const store = await MaildirStore.open(
      { kind: 'maildir', path, fsync: false },
      { logger: silentLogger },
    );
    const topic = uniqueTopic('seen');
    const live = await store.claimer(topic, 'default', { consumer: 'live' });
    // Two consumers that crashed: their in-progress folders stay, with their last heartbeat.
    const crashed = await store.claimer(topic, 'default', { consumer: 'crashed' });
    const gone = await store.claimer(topic, 'default', { consumer: 'gone' });
    const heartbeat = (consumer: string, agoMs: number): void => {
      const at = new Date(Date.now() - agoMs);
      const file = join(path, `.${topic}.default.In-Progress.${consumer}`, 'maildirfolder');
      utimesSync(file, at, at);
    };
    heartbeat('crashed', CONSUMERS_SEEN_MS - 60_000);
    heartbeat('gone', CONSUMERS_SEEN_MS + 60_000);

    expect((await store.stats(topic))[0]).toMatchObject({ group: 'default', consumers: 2 });
    await gone.heartbeat(); // it came back
    expect((await store.stats(topic))[0]).toMatchObject({ consumers: 3 });
    await Promise.all([live.close(), crashed.close(), gone.close()]);
    await store.close();
  });
});

describe('maildir search by id', () => {
  it('keeps the ids of the files it read in an index beside the folders, rebuilt when lost', async () => {
    const path = join(root, 'id-index');
    const store = await MaildirStore.open(
      { kind: 'maildir', path, fsync: false },
      { logger: silentLogger },
    );
    const topic = uniqueTopic('ids');
    const messages = await compose(topic, [{ payload: 1 }, { payload: 2 }, { payload: 3 }]);
    await store.append(topic, messages);
    const [one, two] = messages.map((message) => message.id) as [string, string];
    const found = async (id: string) =>
      (await store.search({ topic, id })).hits.map((hit) => hit.location);

    const index = join(path, 'mailbus-index', `${topic}.default`);
    expect(existsSync(index)).toBe(false);
    const [first] = await found(one);
    expect(first).toBeDefined();
    const lines = readFileSync(index, 'utf8').trim().split('\n');
    expect(lines.map((line) => line.split('\t')[1]).sort()).toEqual(
      messages.map((message) => message.id).sort(),
    );

    // A file's text never changes under its name, so the index is trusted over the file: a
    // file made to mention another id (only a test does that) is not opened for it.
    const [second] = await found(two);
    writeFileSync(second as string, readFileSync(first as string));
    expect(await found(one)).toEqual([first]);

    // Lost or damaged, another process reads the ids anew from the files.
    const reopen = () =>
      MaildirStore.open({ kind: 'maildir', path, fsync: false }, { logger: silentLogger });
    rmSync(index);
    const fresh = await reopen();
    expect((await fresh.search({ topic, id: one })).total).toBe(2);
    expect((await fresh.search({ topic, id: two })).total).toBe(0);
    writeFileSync(index, 'garbage\nmore\tgarbage\n');
    const again = await reopen();
    expect((await again.search({ topic, id: one })).total).toBe(2);
    await again.close();
    await Promise.all([store.close(), fresh.close()]);
  });
});
