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
// died are taken over by the next one that makes spares.

import * as fs from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../log.js';
import { FILE_MODE, errnoOf, listDir } from './folders.js';

/** Spares kept ready per store: a burst larger than this creates the rest of its files. */
export const SPARE_FILES = 8;

const PREFIX = 'spare.';

export class SpareFiles {
  private readonly ready: string[] = [];
  private making: Promise<void> | undefined;
  private adopted = false;
  private stopped = false;

  /** `dir` is the root's tmp/, on the same file system as every folder of the Maildir. */
  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
  ) {}

  /**
   * Renames a spare to `path`, an unused name in a folder's tmp/. False when none is ready:
   * the caller creates its file instead.
   */
  take(path: string): boolean {
    while (!this.stopped) {
      const name = this.ready.pop();
      if (name === undefined) {
        break;
      }
      const spare = join(this.dir, name);
      try {
        fs.renameSync(spare, path);
        // Made once this publish is done: a file created meanwhile would hold up its writes.
        setTimeout(() => this.refill(), 0).unref();
        return true;
      } catch (err) {
        if (errnoOf(err) === 'ENOENT' && !fs.existsSync(spare)) {
          continue; // another process took this one
        }
        // The target's folder is missing (the caller's create reports it), or renames fail.
        this.ready.push(name);
        if (errnoOf(err) !== 'ENOENT') {
          this.stop(err);
        }
        return false;
      }
    }
    this.refill();
    return false;
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

  /** Never rejects: a spare that cannot be made is a file the publish creates itself. */
  private async make(): Promise<void> {
    try {
      if (!this.adopted) {
        this.adopted = true;
        this.ready.push(...listDir(this.dir).filter((name) => name.startsWith(PREFIX)));
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
      try {
        fs.rmSync(join(this.dir, name), { force: true });
      } catch (err) {
        this.logger.debug({ event: 'spares.left', name, err: String(err) });
      }
    }
  }
}
