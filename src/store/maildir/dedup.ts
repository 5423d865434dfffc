// Remembers the caller-chosen ids a Maildir publish stored, so that a publish repeated within
// the deduplication window stores nothing new. One empty marker file per id, named by a digest
// of the id, in `mailbus-ids/<topic>/` beside the folders (Maildir++ treats only names that
// start with a dot as folders, so mail clients and Dovecot ignore it); its mtime is when the id
// was last stored.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MAX_DEDUP_WINDOW_MS } from '../store.js';
import { DIR_MODE, FILE_MODE, errnoOf, listDir, storageError } from './folders.js';

function markerDir(root: string, topic: string): string {
  return join(root, 'mailbus-ids', topic);
}

function markerName(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 40);
}

/** The ids among `ids` that were stored in the topic less than `windowMs` ago. */
export function recentIds(root: string, topic: string, ids: string[], windowMs: number) {
  const since = Date.now() - windowMs;
  const found = new Set<string>();
  for (const id of ids) {
    try {
      if (fs.statSync(join(markerDir(root, topic), markerName(id))).mtimeMs >= since) {
        found.add(id);
      }
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') {
        throw storageError(`cannot read the id markers of topic ${topic}`, err);
      }
    }
  }
  return found;
}

/** Records that these ids were stored now. */
export function rememberIds(root: string, topic: string, ids: string[]): void {
  if (ids.length === 0) {
    return;
  }
  const dir = markerDir(root, topic);
  const now = new Date();
  try {
    fs.mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    for (const id of ids) {
      const path = join(dir, markerName(id));
      fs.writeFileSync(path, '', { mode: FILE_MODE });
      fs.utimesSync(path, now, now);
    }
  } catch (err) {
    throw storageError(`cannot record the ids published to topic ${topic}`, err);
  }
}

/** Deletes the markers that no window can still need. */
export function forgetOldIds(root: string, topic: string): void {
  const dir = markerDir(root, topic);
  const before = Date.now() - MAX_DEDUP_WINDOW_MS;
  for (const name of listDir(dir)) {
    try {
      if (fs.statSync(join(dir, name)).mtimeMs < before) {
        fs.unlinkSync(join(dir, name));
      }
    } catch {
      // removed meanwhile by another process's sweep
    }
  }
}
