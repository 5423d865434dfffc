// The spare files a Maildir store makes ahead for its publishes (src/store/maildir/spares.ts):
// a publish writes into one instead of creating its file, and no spare ever costs a message.

import { execFileSync } from 'node:child_process';
import { existsSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { statSync, symlinkSync, writeFileSync } from 'node:fs';
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

/** The spares in the root's tmp/, by name. */
function spares(path: string): string[] {
  return readdirSync(join(path, 'tmp')).filter((name) => name.startsWith('spare.'));
}

async function sparesReady(path: string, count: number): Promise<void> {
  for (let tries = 0; tries < 200 && spares(path).length < count; tries += 1) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  expect(spares(path)).toHaveLength(count);
}

/** The payloads of a group's waiting messages, sorted. */
async function waitingPayloads(store: MaildirStore, topic: string): Promise<string[]> {
  const waiting = await store.list({ topic, group: 'default', folder: 'waiting' });
  return waiting.map((stored) => /\r\n\r\n"(.*)"/s.exec(stored.raw.toString())?.[1] ?? '').sort();
}

describe('maildir spare files', () => {
  for (const fsync of [false, true]) {
    it(`writes a publish into a spare made ahead (fsync ${fsync})`, async () => {
      const path = join(base, `ahead-${fsync}`);
      const store = await open(path, fsync);
      const topic = uniqueTopic('ahead');
      await store.append(topic, await compose(topic, [{ payload: 'first' }]));
      await sparesReady(path, SPARE_FILES);
      const inodes = new Set(spares(path).map((name) => statSync(join(path, 'tmp', name)).ino));

      const [message] = await compose(topic, [{ payload: 'second' }]);
      await store.append(topic, [message!]);

      const waiting = await store.list({ topic, group: 'default', folder: 'waiting' });
      const second = waiting.find((stored) => stored.raw.equals(message!.raw));
      expect(second).toBeDefined();
      const file = join(path, `.${topic}.default`, second!.ref);
      expect(inodes.has(statSync(file).ino)).toBe(true);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(await waitingPayloads(store, topic)).toEqual(['first', 'second']);

      await store.close();
      expect(spares(path)).toEqual([]);
    });
  }

  it('uses every spare of a burst and creates the rest of its files', async () => {
    const path = join(base, 'burst');
    const store = await open(path);
    const topic = uniqueTopic('burst');
    await store.append(topic, await compose(topic, [{ payload: 'warm' }]));
    await sparesReady(path, SPARE_FILES);

    const payloads = Array.from({ length: 3 * SPARE_FILES }, (_, i) => `m${i}`);
    await store.append(
      topic,
      await compose(
        topic,
        payloads.map((payload) => ({ payload })),
      ),
    );

    expect(await waitingPayloads(store, topic)).toEqual([...payloads, 'warm'].sort());
    await store.close();
  });

  it('takes over the spares a stopped process left, and writes into none that it did not make', async () => {
    const path = join(base, 'left');
    const outside = join(base, 'outside.txt');
    writeFileSync(outside, 'not a spare');
    const tmp = join(path, 'tmp');
    mkdirSync(tmp, { recursive: true });
    writeFileSync(join(tmp, 'spare.left-behind'), '');
    symlinkSync(outside, join(tmp, 'spare.symlink'));
    linkSync(outside, join(tmp, 'spare.hardlink'));
    writeFileSync(join(tmp, 'spare.not-empty'), 'someone else wrote this');
    execFileSync('mkfifo', [join(tmp, 'spare.fifo')]);
    mkdirSync(join(tmp, 'spare.a-directory'));
    const planted = ['spare.symlink', 'spare.hardlink', 'spare.not-empty', 'spare.fifo'];

    const store = await open(path);
    const topic = uniqueTopic('left');
    await store.append(topic, await compose(topic, [{ payload: 'warm' }]));
    // The five files left behind are taken over (never the directory), and three more made.
    await sparesReady(path, SPARE_FILES + 1);
    expect(spares(path)).toEqual(expect.arrayContaining(['spare.left-behind', ...planted]));
    const payloads = Array.from({ length: 2 * SPARE_FILES }, (_, i) => `m${i}`);
    await store.append(
      topic,
      await compose(
        topic,
        payloads.map((payload) => ({ payload })),
      ),
    );

    expect(await waitingPayloads(store, topic)).toEqual([...payloads, 'warm'].sort());
    expect(readFileSync(outside, 'utf8')).toBe('not a spare');
    expect(statSync(outside).nlink).toBe(1);
    expect(spares(path)).not.toContain('spare.left-behind');
    for (const name of planted) {
      expect(spares(path)).not.toContain(name);
    }
    expect(readdirSync(join(path, `.${topic}`, 'tmp'))).toEqual([]);
    await store.close();
    expect(spares(path)).toEqual(['spare.a-directory']);
    expect(lstatSync(join(tmp, 'spare.a-directory')).isDirectory()).toBe(true);
  });

  it('keeps a spare whose rename found no folder to go to', async () => {
    const path = join(base, 'no-folder');
    mkdirSync(join(path, 'tmp'), { recursive: true });
    writeFileSync(join(path, 'tmp', 'spare.one'), '');
    const pool = new SpareFiles(join(path, 'tmp'), silentLogger);
    pool.refill();
    await sparesReady(path, SPARE_FILES);

    expect(pool.take(join(path, 'gone', 'tmp', 'message'))).toBe(false);
    expect(spares(path)).toHaveLength(SPARE_FILES);
    mkdirSync(join(path, 'there'));
    expect(pool.take(join(path, 'there', 'message'))).toBe(true);
    expect(existsSync(join(path, 'there', 'message'))).toBe(true);
    expect(spares(path)).toHaveLength(SPARE_FILES - 1);

    await pool.close();
    expect(spares(path)).toEqual([]);
  });

  it('loses no message when two stores of one Maildir reach for the same spares', async () => {
    const path = join(base, 'shared');
    const [one, two] = [await open(path), await open(path)];
    const topic = uniqueTopic('shared');
    await one.append(topic, await compose(topic, [{ payload: 'warm' }]));
    await sparesReady(path, SPARE_FILES);
    // The second store's first publish takes over the first store's spares as its own.
    await two.append(topic, await compose(topic, [{ payload: 'warm too' }]));
    await new Promise((resolve) => setTimeout(resolve, 50));

    const expected = ['warm', 'warm too'];
    for (let round = 0; round < 5; round += 1) {
      const appends = [one, two].map(async (store, index) => {
        const payloads = Array.from({ length: SPARE_FILES }, (_, i) => `r${round}s${index}m${i}`);
        expected.push(...payloads);
        await store.append(
          topic,
          await compose(
            topic,
            payloads.map((payload) => ({ payload })),
          ),
        );
      });
      await Promise.all(appends);
    }

    expect(await waitingPayloads(one, topic)).toEqual(expected.sort());
    await Promise.all([one.close(), two.close()]);
    expect(spares(path)).toEqual([]);
  });
});
