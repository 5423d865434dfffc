// Backfilling a new group from its topic's inbox: a replay from `earliest` or from a time.
//
// The inbox holds a copy of every published message, and a publish links each message into
// every group it listed before it renames the message into the inbox (see append() in
// maildir-store.ts). So a message in the inbox is already linked into every group its publisher
// saw. That makes the backfill exact, with publishes running at the same time:
//
// 1. The caller creates the group folder, atomically and only if it is new. A publisher that
//    lists the groups after that links into it; one that listed them before does not.
// 2. Wait for the publishes under way. A publish writes its files into the topic's tmp/ before
//    it lists the groups, so a publish that missed the group either has its files in tmp/ now
//    or has already renamed them into the inbox. Once the tmp/ files seen now are gone, every
//    message that missed the group is in the inbox.
// 3. Link each inbox message stored at or after `from` into the group, unless the group has it
//    already. The publisher's link and the inbox file are one inode, and renames keep the
//    inode, so "has it already" is a comparison of inode numbers, wherever in the group
//    (waiting, Scheduled, in flight, Archive) the copy has moved since.

import * as fs from 'node:fs';
import { join } from 'node:path';
import type { Layout } from '../layout.js';
import type { BackfillProgress } from '../store.js';
import { FLAG, nameTimeMs, parseName, placement } from './filenames.js';
import { errnoOf, folderPath, fsyncPath, isTrashed, listDir, storageError } from './folders.js';

/**
 * A file in tmp/ older than this belongs to a publisher that died before it finished (Maildir
 * delivery leaves such files behind), not to a publish still under way.
 */
export const ABANDONED_TMP_MS = 60_000;

/** How often the tmp/ of the topic is looked at while publishes finish. */
const TMP_POLL_MS = 5;

/**
 * Most links made between two progress reports (and fewer, a hundredth of the inbox, for a
 * small one). The loop gives the event loop a turn there too, so that a progress bar on a
 * terminal is drawn while a big inbox is linked.
 */
const PROGRESS_EVERY_MAX = 500;

export interface BackfillTarget {
  root: string;
  layout: Layout;
  /** Every folder of the Maildir++, by mailbox name. */
  folders: () => string[];
  topic: string;
  group: string;
  /** Messages stored in the inbox at or after this time are given to the group. */
  from: Date;
  durable: boolean;
  onProgress?: BackfillProgress;
}

/** Gives a just-created group the inbox messages stored since `from`; returns how many. */
export async function backfillGroup(target: BackfillTarget): Promise<number> {
  const { root, layout, topic, group } = target;
  const topicDir = folderPath(root, layout.topic(topic));
  const groupDir = folderPath(root, layout.group(topic, group));

  await publishesUnderWay(join(topicDir, 'tmp'));

  const held = inodesOfGroup(target);
  const inbox = inboxSince(topicDir, target.from);
  const report = target.onProgress ?? (() => undefined);
  report(0, inbox.length);
  const every = Math.max(1, Math.min(PROGRESS_EVERY_MAX, Math.ceil(inbox.length / 100)));
  let linked = 0;
  try {
    for (const [done, { path, name }] of inbox.entries()) {
      if (done > 0 && done % every === 0) {
        report(done, inbox.length);
        await new Promise((resolve) => setImmediate(resolve));
      }
      const inode = inodeOf(path);
      if (inode === undefined || held.has(inode)) {
        continue; // purged by retention meanwhile, or delivered to the group by its publisher
      }
      const { base, flags } = parseName(name);
      if (link(path, join(groupDir, placement(base, flags.includes(FLAG.flagged))))) {
        linked += 1;
      }
    }
  } catch (err) {
    throw storageError(`cannot backfill group ${group} of topic ${topic}`, err);
  }
  report(inbox.length, inbox.length);

  if (target.durable && linked > 0) {
    await Promise.all([fsyncPath(join(groupDir, 'new')), fsyncPath(join(groupDir, 'cur'))]);
  }
  return linked;
}

/** Resolves once the files now in `tmpDir` are gone: delivered into the inbox, or abandoned. */
async function publishesUnderWay(tmpDir: string): Promise<void> {
  let pending = listDir(tmpDir);
  while (pending.length > 0) {
    const now = Date.now();
    pending = pending.filter((name) => {
      const mtimeMs = mtimeOf(join(tmpDir, name));
      return mtimeMs !== undefined && now - mtimeMs < ABANDONED_TMP_MS;
    });
    if (pending.length > 0) {
      await new Promise((resolve) => setTimeout(resolve, TMP_POLL_MS));
    }
  }
}

interface InboxFile {
  path: string;
  name: string;
}

/** The inbox messages stored at or after `from`, in publish order (their names start with it). */
function inboxSince(topicDir: string, from: Date): InboxFile[] {
  const files: InboxFile[] = [];
  for (const sub of ['new', 'cur']) {
    for (const name of listDir(join(topicDir, sub))) {
      if (name.startsWith('.') || isTrashed(name) || nameTimeMs(name) < from.getTime()) {
        continue;
      }
      files.push({ path: join(topicDir, sub, name), name });
    }
  }
  return files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The inodes of every message file the group holds, in any of its folders. */
function inodesOfGroup({ root, layout, folders, topic, group }: BackfillTarget): Set<number> {
  const inProgress = layout.inProgress(topic, group) + layout.delimiter;
  const mailboxes = [
    layout.group(topic, group),
    layout.scheduled(topic, group),
    layout.archive(topic, group),
    ...folders().filter((mailbox) => mailbox.startsWith(inProgress)),
  ];
  const inodes = new Set<number>();
  for (const mailbox of mailboxes) {
    for (const sub of ['new', 'cur']) {
      const dir = join(folderPath(root, mailbox), sub);
      for (const name of listDir(dir)) {
        const inode = inodeOf(join(dir, name));
        if (inode !== undefined) {
          inodes.add(inode);
        }
      }
    }
  }
  return inodes;
}

function inodeOf(path: string): number | undefined {
  try {
    return fs.statSync(path).ino;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') {
      return undefined;
    }
    throw err;
  }
}

function mtimeOf(path: string): number | undefined {
  try {
    return fs.statSync(path).mtimeMs;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') {
      return undefined;
    }
    throw err;
  }
}

/** Hard-links `from` to `to`; false when `from` was removed meanwhile (retention). */
function link(from: string, to: string): boolean {
  try {
    fs.linkSync(from, to);
    return true;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') {
      return false;
    }
    throw err;
  }
}
