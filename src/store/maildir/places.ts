// Operator access to the messages of one folder: listing, removing, purging by age. A message is
// named by a ref relative to its folder (`new/NAME`, `cur/NAME`, or for in-flight messages
// `<in-progress folder>/cur/NAME`), checked before it touches a path.

import * as fs from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES, MailbusError } from '../../errors.js';
import type { Layout } from '../layout.js';
import type { ListOptions, Place, StoredMessage } from '../store.js';
import { nameTimeMs } from './filenames.js';
import { errnoOf, folderPath, isTrashed, listDir, storageError, streamDir } from './folders.js';

export interface Entry {
  ref: string;
  path: string;
  name: string;
}

const REF_PATTERN = /^(?:([A-Za-z0-9_.-]+)\/)?(new|cur)\/([^/\0]+)$/;

/** The Maildir++ folders (by mailbox name) that make up a place. */
export function placeFolders(layout: Layout, folders: string[], place: Place): string[] {
  const { topic, group } = place;
  switch (place.folder) {
    case 'topic':
      return [layout.topic(topic)];
    case 'waiting':
      return [layout.group(topic, group)];
    case 'scheduled':
      return [layout.scheduled(topic, group)];
    case 'archive':
      return [layout.archive(topic, group)];
    case 'junk':
      return [layout.junk(topic, group)];
    case 'quarantine':
      return [layout.quarantine(topic, group)];
    case 'in-flight': {
      const prefix = layout.inProgress(topic, group) + layout.delimiter;
      return folders.filter((mailbox) => mailbox.startsWith(prefix));
    }
  }
}

/**
 * Calls `visit` for each message file of a place, in no order, without building its path: for
 * a scan of many thousands. `dir` is the folder's new/ or cur/; `refPrefix` + name is its ref.
 */
export function visitEntries(
  root: string,
  layout: Layout,
  folders: string[],
  place: Place,
  visit: (dir: string, name: string, refPrefix: string) => void,
): void {
  const many = place.folder === 'in-flight';
  for (const mailbox of placeFolders(layout, folders, place)) {
    for (const sub of ['new', 'cur']) {
      const dir = join(folderPath(root, mailbox), sub);
      const refPrefix = many ? `.${mailbox}/${sub}/` : `${sub}/`;
      for (const name of streamDir(dir)) {
        if (!name.startsWith('.') && !isTrashed(name)) {
          visit(dir, name, refPrefix);
        }
      }
    }
  }
}

export function entries(root: string, layout: Layout, folders: string[], place: Place): Entry[] {
  const many = place.folder === 'in-flight';
  const found: Entry[] = [];
  for (const mailbox of placeFolders(layout, folders, place)) {
    for (const sub of ['new', 'cur']) {
      for (const name of listDir(join(folderPath(root, mailbox), sub))) {
        if (name.startsWith('.') || isTrashed(name)) {
          continue;
        }
        const ref = many ? `.${mailbox}/${sub}/${name}` : `${sub}/${name}`;
        found.push({ ref, name, path: join(folderPath(root, mailbox), sub, name) });
      }
    }
  }
  return found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function listPlace(
  root: string,
  layout: Layout,
  folders: string[],
  place: Place,
  options: ListOptions = {},
): StoredMessage[] {
  const all = entries(root, layout, folders, place);
  const chosen = options.limit === undefined ? all : all.slice(0, options.limit);
  const messages: StoredMessage[] = [];
  for (const entry of chosen) {
    let raw: Buffer;
    try {
      raw = fs.readFileSync(entry.path);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') {
        continue; // claimed or removed meanwhile
      }
      throw storageError(`cannot read ${entry.path}`, err);
    }
    messages.push({
      ref: entry.ref,
      location: entry.path,
      raw,
      storedAt: new Date(nameTimeMs(entry.name)),
    });
  }
  return messages;
}

/** Resolves a ref to a path inside the place, refusing anything that could leave it. */
function refPath(root: string, layout: Layout, folders: string[], place: Place, ref: string) {
  const match = REF_PATTERN.exec(ref);
  const allowed = placeFolders(layout, folders, place);
  const [, dotted, sub, name] = match ?? [];
  const mailbox = dotted === undefined ? allowed[0] : dotted.slice(1);
  const inPlace = place.folder === 'in-flight' ? dotted !== undefined : dotted === undefined;
  if (!match || !inPlace || mailbox === undefined || !allowed.includes(mailbox)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `"${ref.replace(/[^\x20-\x7e]/g, '?')}" is not a message of ${place.folder} in ` +
        `${place.topic}/${place.group}`,
    );
  }
  return join(folderPath(root, mailbox), sub as string, name as string);
}

export function removeFromPlace(
  root: string,
  layout: Layout,
  folders: string[],
  place: Place,
  refs: string[],
): number {
  const paths = refs.map((ref) => refPath(root, layout, folders, place, ref));
  return paths.filter(removeFile).length;
}

/** Removes one message file; false when it was gone already (claimed or removed meanwhile). */
function removeFile(path: string): boolean {
  try {
    fs.unlinkSync(path);
    return true;
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') {
      throw storageError(`cannot remove ${path}`, err);
    }
    return false;
  }
}

export function purgePlace(
  root: string,
  layout: Layout,
  folders: string[],
  place: Place,
  before: Date,
): number {
  // Streamed, not listed and sorted: workers run this at start and every minute, and a topic's
  // inbox may hold hundreds of thousands of copies.
  let removed = 0;
  const cutoff = before.getTime();
  for (const mailbox of placeFolders(layout, folders, place)) {
    for (const sub of ['new', 'cur']) {
      const dir = join(folderPath(root, mailbox), sub);
      for (const name of streamDir(dir)) {
        if (name.startsWith('.') || isTrashed(name) || nameTimeMs(name) >= cutoff) {
          continue;
        }
        if (removeFile(join(dir, name))) {
          removed += 1;
        }
      }
    }
  }
  return removed;
}
