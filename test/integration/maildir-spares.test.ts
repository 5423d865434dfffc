// The spare files a Maildir store makes ahead for its publishes (src/store/maildir/spares.ts):
// a publish writes into one instead of creating its file, and no spare ever costs a message.

import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { MaildirStore } from '../../src/store/maildir/maildir-store.js';
import { SPARE_FILES, SpareFiles } from '../../src/store/maildir/spares.js';
import { compose, uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const base = tempDir('spares');

function open(path: string, fsync = false): Promise<MaildirStore> {
  return MaildirStore.open({ kind: 'maildir', path, fsync }, { logger: silentLogger });
}

/** The names in the root's tmp/ that start like a spare's. */
function spares(path: string): string[] {
  return readdirSync(join(path, 'tmp')).filter((name) => name.startsWith('spare.'));
}

async function sparesReady(path: string, count: number): Promise<void> {
  for (let tries = 0; tries < 200 && spares(path).length < count; tries += 1) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  expect(spares(path)).toHaveLength(count);
}

async function publish(store: MaildirStore, topic: string, payloads: string[]): Promise<void> {
  await store.append(
    topic,
    await compose(
      topic,
      payloads.map((payload) => ({ payload })),
    ),
  );
}

/** Two publishes: a store makes spares from its second one on. */
async function warm(store: MaildirStore, topic: string): Promise<void> {
  await publish(store, topic, ['warm 1']);
  await publish(store, topic, ['warm 2']);
}

/** The payloads of a group's waiting messages, sorted. */
async function waitingPayloads(store: MaildirStore, topic: string): Promise<string[]> {
  const waiting = await store.list({ topic, group: 'default', folder: 'waiting' });
  return waiting.map((stored) => /\r\n\r\n"(.*)"/s.exec(stored.raw.toString())?.[1] ?? '').sort();
}

/** The permission bits of every waiting message file of the group. */
function waitingModes(path: string, topic: string): number[] {
  const dir = join(path, `.${topic}.default`, 'new');
  return readdirSync(dir).map((name) => statSync(join(dir, name)).mode & 0o777);
}

describe('maildir spare files', () => {
  for (const fsync of [false, true]) {
    it(`writes a publish into a spare made ahead (fsync ${fsync})`, async () => {
      const path = join(base, `ahead-${fsync}`);
      const store = await open(path, fsync);
      const topic = uniqueTopic('ahead');
      await warm(store, topic);
      await sparesReady(path, SPARE_FILES);
      const inodes = new Set(spares(path).map((name) => statSync(join(path, 'tmp', name)).ino));

      const [message] = await compose(topic, [{ payload: 'third' }]);
      await store.append(topic, [message!]);

      const waiting = await store.list({ topic, group: 'default', folder: 'waiting' });
      const third = waiting.find((stored) => stored.raw.equals(message!.raw));
      expect(third).toBeDefined();
      const file = join(path, `.${topic}.default`, third!.ref);
      expect(inodes.has(statSync(file).ino)).toBe(true);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(await waitingPayloads(store, topic)).toEqual(['third', 'warm 1', 'warm 2']);

      await store.close();
      expect(spares(path)).toEqual([]);
    });
  }

  it('makes none for a store that publishes once, as a one-shot command does', async () => {
    const path = join(base, 'once');
    const store = await open(path);
    const topic = uniqueTopic('once');
    await publish(store, topic, ['only', 'one', 'batch']);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(spares(path)).toEqual([]);
    await store.close();
  });

  it('uses every spare of a burst and creates the rest of its files', async () => {
    const path = join(base, 'burst');
    const store = await open(path);
    const topic = uniqueTopic('burst');
    await warm(store, topic);
    await sparesReady(path, SPARE_FILES);

    const payloads = Array.from({ length: 3 * SPARE_FILES }, (_, i) => `m${i}`);
    await publish(store, topic, payloads);

    expect(await waitingPayloads(store, topic)).toEqual([...payloads, 'warm 1', 'warm 2'].sort());
    await store.close();
  });

  it('takes over the spares a stopped process left, and leaves alone what is no spare', async () => {
    const path = join(base, 'left');
    const outside = join(base, 'outside.txt');
    writeFileSync(outside, 'not a spare');
    const tmp = join(path, 'tmp');
    mkdirSync(tmp, { recursive: true });
    writeFileSync(join(tmp, 'spare.left-behind'), '');
    writeFileSync(join(tmp, 'spare.wide-open'), '');
    chmodSync(join(tmp, 'spare.wide-open'), 0o666);
    symlinkSync(outside, join(tmp, 'spare.symlink'));
    linkSync(outside, join(tmp, 'spare.hardlink'));
    writeFileSync(join(tmp, 'spare.not-empty'), 'someone else wrote this');
    execFileSync('mkfifo', [join(tmp, 'spare.fifo')]);
    mkdirSync(join(tmp, 'spare.a-directory'));
    const planted = [
      'spare.a-directory',
      'spare.fifo',
      'spare.hardlink',
      'spare.not-empty',
      'spare.symlink',
    ];

    const store = await open(path);
    const topic = uniqueTopic('left');
    await warm(store, topic);
    // Two left behind are taken over and six more made; the five others are no spares.
    await sparesReady(path, SPARE_FILES + planted.length);
    const payloads = Array.from({ length: 2 * SPARE_FILES }, (_, i) => `m${i}`);
    await publish(store, topic, payloads);

    expect(await waitingPayloads(store, topic)).toEqual([...payloads, 'warm 1', 'warm 2'].sort());
    expect(new Set(waitingModes(path, topic))).toEqual(new Set([0o600]));
    expect(readFileSync(outside, 'utf8')).toBe('not a spare');
    expect(readFileSync(join(tmp, 'spare.not-empty'), 'utf8')).toBe('someone else wrote this');
    expect(lstatSync(join(tmp, 'spare.symlink')).isSymbolicLink()).toBe(true);
    expect(lstatSync(join(tmp, 'spare.fifo')).isFIFO()).toBe(true);
    expect(readdirSync(join(path, `.${topic}`, 'tmp'))).toEqual([]);
    await store.close();
    expect(spares(path).sort()).toEqual(planted);
  });

  it('publishes past spares replaced by directories after they were made', async () => {
    const path = join(base, 'replaced');
    const store = await open(path);
    const topic = uniqueTopic('replaced');
    await warm(store, topic);
    await sparesReady(path, SPARE_FILES);
    const replaced = spares(path);
    for (const name of replaced) {
      rmSync(join(path, 'tmp', name));
      mkdirSync(join(path, 'tmp', name, 'inside'), { recursive: true });
    }

    await publish(store, topic, ['after']);

    expect(await waitingPayloads(store, topic)).toEqual(['after', 'warm 1', 'warm 2']);
    expect(readdirSync(join(path, `.${topic}`, 'tmp'))).toEqual([]);
    for (const name of replaced) {
      expect(existsSync(join(path, 'tmp', name, 'inside'))).toBe(true);
    }
    await store.close();
  });

  it('keeps a spare whose rename found no folder to go to', async () => {
    const path = join(base, 'no-folder');
    mkdirSync(join(path, 'tmp'), { recursive: true });
    writeFileSync(join(path, 'tmp', 'spare.one'), '');
    const pool = new SpareFiles(join(path, 'tmp'), silentLogger);
    pool.refill();
    await sparesReady(path, SPARE_FILES);
    const raw = Buffer.from('a message\r\n');

    expect(await pool.write(join(path, 'gone', 'tmp', 'message'), raw, false)).toBe(false);
    expect(spares(path)).toHaveLength(SPARE_FILES);
    mkdirSync(join(path, 'there'));
    expect(await pool.write(join(path, 'there', 'message'), raw, false)).toBe(true);
    expect(readFileSync(join(path, 'there', 'message'))).toEqual(raw);
    expect(spares(path)).toHaveLength(SPARE_FILES - 1);

    await pool.close();
    expect(spares(path)).toEqual([]);
  });

  it('loses no message when two stores of one Maildir reach for the same spares', async () => {
    const path = join(base, 'shared');
    const [one, two] = [await open(path), await open(path)];
    const topic = uniqueTopic('shared');
    await warm(one, topic);
    await sparesReady(path, SPARE_FILES);
    // The second store's first spares are the first store's, taken over.
    await warm(two, topic);
    await new Promise((resolve) => setTimeout(resolve, 50));

    const expected = ['warm 1', 'warm 2', 'warm 1', 'warm 2'];
    for (let round = 0; round < 5; round += 1) {
      const appends = [one, two].map(async (store, index) => {
        const payloads = Array.from({ length: SPARE_FILES }, (_, i) => `r${round}s${index}m${i}`);
        expected.push(...payloads);
        await publish(store, topic, payloads);
      });
      await Promise.all(appends);
    }

    expect(await waitingPayloads(one, topic)).toEqual(expected.sort());
    await Promise.all([one.close(), two.close()]);
    expect(spares(path)).toEqual([]);
  });
});
