// File-system steps on Maildir++ folders: creating a folder atomically, delivering a file the
// Maildir way (write into tmp/, fsync, then link or rename into place), and counting messages.
// The hot path uses synchronous calls: renames and links take microseconds, and the promise API
// costs a thread-pool hop per call. Only fsync, which waits for the disk, goes to the pool.

import * as fs from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ERROR_CODES, MailbusError, errorText } from '../../errors.js';
import type { SpareFiles } from './spares.js';

/** Directories are private to the owner: a queue holds other people's data. */
export const DIR_MODE = 0o700;
/** Message files likewise. */
export const FILE_MODE = 0o600;

const SUBDIRS = ['cur', 'new', 'tmp'] as const;

/** The directory of a Maildir++ folder: `.` then the mailbox name; the root is INBOX. */
export function folderPath(root: string, mailbox: string): string {
  return join(root, `.${mailbox}`);
}

export function storageError(action: string, err: unknown): MailbusError {
  return new MailbusError(ERROR_CODES.STORAGE, `${action}: ${errorText(err)}`, { cause: err });
}

export function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function makeMaildir(dir: string, subfolder: boolean): void {
  fs.mkdirSync(dir, { mode: DIR_MODE, recursive: true });
  for (const sub of SUBDIRS) {
    fs.mkdirSync(join(dir, sub), { mode: DIR_MODE, recursive: true });
  }
  if (subfolder) {
    // Maildir++ marks every folder but the root with an empty file of this name.
    fs.writeFileSync(join(dir, 'maildirfolder'), '', { mode: FILE_MODE });
  }
}

/** Makes the root a Maildir (cur, new, tmp) so that mail clients and Dovecot accept it. */
export function ensureRoot(root: string): void {
  try {
    makeMaildir(root, false);
  } catch (err) {
    throw storageError(`cannot create the Maildir at ${root}`, err);
  }
}

/**
 * Creates a folder if it is missing. The folder is built under the root's tmp/ and renamed into
 * place, so that no other process ever sees it half made (a publisher linking into a group
 * folder that has no new/ yet would fail).
 */
export function ensureFolder(root: string, mailbox: string): void {
  if (!fs.existsSync(join(folderPath(root, mailbox), 'tmp'))) {
    createFolder(root, mailbox);
  }
}

/**
 * Creates a folder the way ensureFolder does, and tells whether this call made it: false when
 * it exists already. rename(2) refuses to replace a non-empty directory, so of several processes
 * creating one folder at once exactly one is told true.
 */
export function createFolder(root: string, mailbox: string): boolean {
  const target = folderPath(root, mailbox);
  const staging = join(root, 'tmp', `folder-${randomBytes(6).toString('hex')}`);
  try {
    makeMaildir(staging, true);
    fs.renameSync(staging, target);
    return true;
  } catch (err) {
    fs.rmSync(staging, { recursive: true, force: true });
    // Someone else made it first.
    if (fs.existsSync(join(target, 'tmp'))) {
      return false;
    }
    throw storageError(`cannot create the folder ${mailbox} in ${root}`, err);
  }
}

export function fsyncPath(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.open(path, 'r', (openErr, fd) => {
      if (openErr) {
        reject(openErr);
        return;
      }
      fs.fsync(fd, (syncErr) => {
        fs.close(fd, () => (syncErr ? reject(syncErr) : resolve()));
      });
    });
  });
}

/**
 * Writes a new file into `dir`/tmp and returns its path; fsynced when `durable`. With `spares`,
 * a spare file (spares.ts) is renamed into place and written, when one is ready.
 */
export async function writeTmp(
  dir: string,
  base: string,
  raw: Buffer,
  durable: boolean,
  spares?: SpareFiles,
): Promise<string> {
  const path = join(dir, 'tmp', base);
  if (await spares?.write(path, raw, durable)) {
    return path;
  }

  // Creating a file on a busy disk takes up to a millisecond: it runs in the thread pool, so
  // that the files of one batch are created side by side and consumers in this process go on.
  const fd = await fs.promises.open(path, 'wx', FILE_MODE);
  try {
    await fd.write(raw);
    if (durable) {
      await fd.sync();
    }
  } catch (err) {
    await fd.close();
    fs.rmSync(path, { force: true });
    throw err;
  }
  await fd.close();
  return path;
}

/**
 * The names in a message folder (new/, cur/, tmp/) or a bookkeeping directory, but for
 * directories: a directory planted among the messages is not a message, and is left alone by
 * claims, counts and listings. None when the directory does not exist.
 */
export function listDir(path: string): string[] {
  return [...streamDir(path)];
}

/**
 * The names listDir() gives, read a batch at a time (opendir): for folders that may hold a
 * deep backlog, so that no array of every name is ever built.
 */
export function* streamDir(path: string): Generator<string> {
  let dir: fs.Dir;
  try {
    dir = fs.opendirSync(path, { bufferSize: 256 });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') {
      return;
    }
    throw storageError(`cannot list ${path}`, err);
  }
  try {
    for (let entry = dir.readSync(); entry !== null; entry = dir.readSync()) {
      if (!entry.isDirectory()) {
        yield entry.name;
      }
    }
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') {
      throw storageError(`cannot list ${path}`, err);
    }
  } finally {
    dir.closeSync();
  }
}

/** Every name in a directory, directories included (the folders of the Maildir++ root). */
export function listEntries(path: string): string[] {
  try {
    return fs.readdirSync(path);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') {
      return [];
    }
    throw storageError(`cannot list ${path}`, err);
  }
}

/** How many messages a folder holds in new/ and cur/, leaving out those marked for deletion. */
export function countMessages(root: string, mailbox: string): number {
  const dir = folderPath(root, mailbox);
  const names = [...listDir(join(dir, 'new')), ...listDir(join(dir, 'cur'))];
  return names.filter((name) => !name.startsWith('.') && !isTrashed(name)).length;
}

/** Whether a file name carries the T (trashed) flag: deleted, waiting to be expunged. */
export function isTrashed(name: string): boolean {
  const info = name.indexOf(':2,');
  return info !== -1 && name.includes('T', info + 3);
}
