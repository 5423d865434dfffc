// Empty files made ahead of need, so that a publish on a quiet queue does not wait while its
// file is created. On a journalled disk, creating a file (allocating its inode) is the slowest
// step of a small publish: about 0.5 ms on the ext4 disk of docs/benchmarks.md, against 0.1 ms
// for the rename that moves a ready file into place. A publish takes a spare by renaming it into
// the folder's tmp/ under its message's name and writes the message into it; new spares are
// made in the background, on the thread pool, while the queue is quiet.
//
// The spares wait in the root's tmp/ (INBOX's, which mailbus never delivers into), named
// `spare.*`. Any process of the Maildir may take any of them: exactly one rename succeeds, and
// the others try the next spare or create their file as before. Spares left by a process that
// died are taken over by the next one that makes spares. Only an empty regular file of this
// user with no other name counts as a spare: anything else under a spare's name is left alone.

import * as fs from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../log.js';
import { FILE_MODE, errnoOf, listDir, storageError } from './folders.js';

/** Spares kept ready per store: a burst larger than this creates the rest of its files. */
export const SPARE_FILES = 8;

const PREFIX = 'spare.';

/**
 * Opens a spare taken into tmp/. It exists, so nothing is created; it is never followed if it
 * is a link, and a FIFO put under a spare's name does not block the open.
 */
const SPARE_FLAGS = fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

/** A spare as a store makes it: an empty regular file of this user with no other name. */
function isSpare(stat: fs.Stats): boolean {
  const own = process.getuid === undefined || stat.uid === process.getuid();
  return stat.isFile() && stat.size === 0 && stat.nlink === 1 && own;
}

/** Whether `path` holds a spare now: false when it is gone or is something else. */
function isSpareAt(path: string): boolean {
  try {
    return isSpare(fs.lstatSync(path));
  } catch {
    return false;
  }
}

export class SpareFiles {
  private readonly ready: string[] = [];
  private making: Promise<void> | undefined;
  private appends = 0;
  private adopted = false;
  private stopped = false;

  /** `dir` is the root's tmp/, on the same file system as every folder of the Maildir. */
  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
  ) {}

  /**
   * Writes `raw` into a spare renamed to `path`, an unused name in a folder's tmp/, fsynced
   * when `durable`. False when no spare is ready: the caller creates the file instead.
   * Without fsync this is done at once: with no file to create, the write of a message takes
   * tens of microseconds, less than the hops to the thread pool would.
   */
  async write(path: string, raw: Buffer, durable: boolean): Promise<boolean> {
    if (!this.take(path)) {
      return false;
    }
    let fd: number | undefined;
    try {
      fd = fs.openSync(path, SPARE_FLAGS);
      if (!isSpare(fs.fstatSync(fd))) {
        throw new Error('not a spare');
      }
      fs.fchmodSync(fd, FILE_MODE);
    } catch {
      // Replaced between the look and the rename: moved back, and the file is created.
      if (fd !== undefined) {
        fs.closeSync(fd);
      }
      this.moveBack(path);
      return false;
    }

    try {
      for (let written = 0; written < raw.length;) {
        written += fs.writeSync(fd, raw, written);
      }
      if (durable) {
        await new Promise<void>((resolve, reject) => {
          fs.fsync(fd as number, (err) => (err ? reject(err) : resolve()));
        });
      }
    } catch (err) {
      fs.rmSync(path, { force: true });
      throw err;
    } finally {
      fs.closeSync(fd);
    }
    return true;
  }

  /**
   * Called after each append: from the second on, tops the spares up on a later turn of the
   * event loop (made at once, they slowed the publish they followed). A store that publishes
   * once, as a one-shot command does, makes none: they would only be removed at its close.
   */
  appended(): void {
    this.appends += 1;
    if (this.appends > 1 && !this.stopped && this.ready.length < SPARE_FILES) {
      setTimeout(() => this.refill(), 0).unref();
    }
  }

  /** Makes spares up to SPARE_FILES in the background, one run at a time. */
  refill(): void {
    if (this.making !== undefined || this.stopped || this.ready.length >= SPARE_FILES) {
      return;
    }
    this.making = this.make().finally(() => {
      this.making = undefined;
    });
  }

  /** Removes the spares this store knows of, once a run making them is done. */
  async close(): Promise<void> {
    this.discard();
    await this.making;
  }

  /** Renames a ready spare to `path`; false when none is. */
  private take(path: string): boolean {
    while (!this.stopped) {
      const name = this.ready.pop();
      if (name === undefined) {
        return false;
      }
      const spare = join(this.dir, name);
      if (!isSpareAt(spare)) {
        continue; // taken by another process, or no longer a spare: not ours to touch
      }
      try {
        fs.renameSync(spare, path);
        return true;
      } catch (err) {
        if (errnoOf(err) === 'ENOENT' && !fs.existsSync(spare)) {
          continue; // another process took it first
        }
        // The target's folder is missing (the caller's create reports it), or renames fail.
        this.ready.push(name);
        if (errnoOf(err) !== 'ENOENT') {
          this.stop(err);
        }
        return false;
      }
    }
    return false;
  }

  /** Never rejects: a spare that cannot be made is a file the publish creates itself. */
  private async make(): Promise<void> {
    try {
      if (!this.adopted) {
        this.adopted = true;
        const left = listDir(this.dir).filter((name) => name.startsWith(PREFIX));
        this.ready.push(...left.filter((name) => isSpareAt(join(this.dir, name))));
      }
      while (!this.stopped && this.ready.length < SPARE_FILES) {
        const name = `${PREFIX}${randomBytes(8).toString('hex')}`;
        const handle = await fs.promises.open(join(this.dir, name), 'wx', FILE_MODE);
        await handle.close();
        this.ready.push(name);
        if (this.stopped) {
          this.discard();
        }
      }
    } catch (err) {
      this.stop(err);
    }
  }

  /**
   * Moves what was found under a spare's name back into the root's tmp/, under a new name that
   * no store takes for a spare: it is not the store's to remove, and never stays in a folder.
   */
  private moveBack(path: string): void {
    const back = join(this.dir, `not-a-spare.${randomBytes(8).toString('hex')}`);
    this.logger.warn({ event: 'spares.not_a_spare', path, movedTo: back });
    try {
      fs.renameSync(path, back);
    } catch (err) {
      throw storageError(`cannot move ${path}, found under the name of a spare file`, err);
    }
  }

  /** Spares cannot be made or moved here: publishes create their files, as without them. */
  private stop(err: unknown): void {
    if (!this.stopped) {
      this.logger.warn({ event: 'spares.unavailable', dir: this.dir, err: String(err) });
    }
    this.discard();
  }

  /** Removes the ready spares, as far as it can: one left behind is taken over later. */
  private discard(): void {
    this.stopped = true;
    for (const name of this.ready.splice(0)) {
      const spare = join(this.dir, name);
      if (!isSpareAt(spare)) {
        continue;
      }
      try {
        fs.rmSync(spare, { force: true });
      } catch (err) {
        this.logger.debug({ event: 'spares.left', name, err: String(err) });
      }
    }
  }
}
