// Reads a group's mailboxes straight from a Maildir++ directory: the Maildir store's own, or the
// one Dovecot serves the queue account from. Read-only (Dovecot's files are never changed
// behind its back), and independent of the store code under test, so that the checker sees
// what is really stored rather than what a store reports.

import * as fs from 'node:fs';
import { join } from 'node:path';

/** One stored message, as far as the checker cares. */
export interface StoredCopy {
  /** The message id: the Message-ID, or for a dead letter the id of the message it reports. */
  id: string;
  /** X-Mailbus-Attempts: attempts made so far (0 when absent). */
  attempts: number;
  lastError?: string;
  file: string;
}

export interface GroupState {
  waiting: StoredCopy[];
  scheduled: StoredCopy[];
  inFlight: StoredCopy[];
  archived: StoredCopy[];
  dead: StoredCopy[];
}

/** Bytes read from the start of a file to find its header: ours are far shorter. */
const HEADER_READ_BYTES = 16 * 1024;

/** The directory of a mailbox in a Maildir++ root ('.' is the delimiter). */
export function mailboxDir(root: string, mailbox: string): string {
  return join(root, `.${mailbox}`);
}

/** Maildir info flags (`name:2,FS`) with T: deleted, waiting for an expunge; no message. */
const TRASHED = /:2,[A-Za-z]*T/;

function messageFiles(dir: string): string[] {
  const files: string[] = [];
  for (const sub of ['new', 'cur']) {
    try {
      for (const name of fs.readdirSync(join(dir, sub))) {
        if (!name.startsWith('.') && !TRASHED.test(name)) {
          files.push(join(dir, sub, name));
        }
      }
    } catch {
      // a folder that does not exist (yet) holds nothing
    }
  }
  return files;
}

/** The in-progress mailboxes of a group, one per consumer. */
function inProgressDirs(root: string, topic: string, group: string): string[] {
  const prefix = `.${topic}.${group}.In-Progress.`;
  try {
    return fs
      .readdirSync(root)
      .filter((name) => name.startsWith(prefix))
      .map((name) => join(root, name));
  } catch {
    return [];
  }
}

/**
 * How many messages the in-progress mailbox of the worker process `pid` holds: consumer ids
 * are `<host>-<pid>-<random>` (src/consumer/consumer-id.ts).
 */
export function inFlightOfProcess(root: string, topic: string, pid: number, group = 'default') {
  return inProgressDirs(root, topic, group)
    .filter((dir) => dir.includes(`-${pid}-`))
    .reduce((sum, dir) => sum + messageFiles(dir).length, 0);
}

/** The ids of the messages `inFlightOfProcess` counts. */
export function heldByProcess(root: string, topic: string, pid: number, group = 'default') {
  return inProgressDirs(root, topic, group)
    .filter((dir) => dir.includes(`-${pid}-`))
    .flatMap((dir) => messageFiles(dir).flatMap(readCopy))
    .map((copy) => copy.id);
}

/** How many messages a mailbox holds (cheap: one directory listing per subfolder). */
export function countMessages(root: string, mailbox: string): number {
  return messageFiles(mailboxDir(root, mailbox)).length;
}

/** Message counts of a group's mailboxes, cheaply, for polling while a run goes on. */
export function groupCounts(root: string, topic: string, group = 'default') {
  const base = `${topic}.${group}`;
  return {
    waiting: countMessages(root, base),
    scheduled: countMessages(root, `${base}.Scheduled`),
    inFlight: inProgressDirs(root, topic, group).reduce(
      (sum, dir) => sum + messageFiles(dir).length,
      0,
    ),
    archived: countMessages(root, `${base}.Archive`),
    dead: countMessages(root, `${base}.Junk`),
  };
}

/** Every message of a group's mailboxes, with its id and attempt fields. */
export function readGroupState(root: string, topic: string, group = 'default'): GroupState {
  const base = `${topic}.${group}`;
  const read = (dir: string): StoredCopy[] => messageFiles(dir).flatMap(readCopy);
  return {
    waiting: read(mailboxDir(root, base)),
    scheduled: read(mailboxDir(root, `${base}.Scheduled`)),
    inFlight: inProgressDirs(root, topic, group).flatMap(read),
    archived: read(mailboxDir(root, `${base}.Archive`)),
    dead: read(mailboxDir(root, `${base}.Junk`)),
  };
}

/** The ids of the messages in one mailbox (the topic's inbox, a group). */
export function readMailboxIds(root: string, mailbox: string): string[] {
  return messageFiles(mailboxDir(root, mailbox))
    .flatMap(readCopy)
    .map((copy) => copy.id);
}

/** Every message file of a mailbox that is empty or has no Message-ID: damage. */
export function damagedFiles(root: string, mailbox: string): string[] {
  return messageFiles(mailboxDir(root, mailbox)).filter((file) => readCopy(file).length === 0);
}

function readCopy(file: string): StoredCopy[] {
  let head: string;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const buffer = Buffer.alloc(HEADER_READ_BYTES);
      const length = fs.readSync(fd, buffer, 0, buffer.length, 0);
      head = buffer.subarray(0, length).toString('latin1');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return []; // moved away while we looked
  }
  const fields = headerFields(head);
  const id = fields.get('x-mailbus-original-id') ?? fields.get('message-id');
  if (!id) {
    return [];
  }
  const attempts = Number.parseInt(fields.get('x-mailbus-attempts') ?? '0', 10);
  return [
    {
      id: id.replace(/^<|>$/g, ''),
      attempts: Number.isFinite(attempts) ? attempts : 0,
      lastError: fields.get('x-mailbus-last-error'),
      file,
    },
  ];
}

/** The fields of a message header, names in lower case, folded lines joined. */
function headerFields(text: string): Map<string, string> {
  const end = text.search(/\r?\n\r?\n/);
  const header = end === -1 ? text : text.slice(0, end);
  const fields = new Map<string, string>();
  for (const line of header.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0) {
      const name = line.slice(0, colon).trim().toLowerCase();
      if (!fields.has(name)) {
        fields.set(name, line.slice(colon + 1).trim());
      }
    }
  }
  return fields;
}
