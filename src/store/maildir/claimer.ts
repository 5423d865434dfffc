// Hands out one group's waiting messages to one consumer. A claim renames the file from the
// group's folder into this consumer's in-progress folder: rename(2) is atomic, so when several
// processes reach for the same file exactly one succeeds and the others see ENOENT.

import * as fs from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES, LeaseLostError, MailbusError, isMailbusError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Layout } from '../layout.js';
import type { Claim, Claimer, ReleaseOptions } from '../store.js';
import { CandidateQueue } from './candidates.js';
import { FLAG, curName, parseName, uniqueBaseName, withFlag } from './filenames.js';
import {
  ensureFolder,
  errnoOf,
  folderPath,
  fsyncPath,
  listDir,
  storageError,
  writeTmp,
} from './folders.js';

export interface MaildirClaimerOptions {
  root: string;
  layout: Layout;
  topic: string;
  group: string;
  consumer: string;
  durable: boolean;
  logger: Logger;
  onClose: () => void;
}

interface MaildirClaim extends Claim {
  /** The file's base name, kept when it moves on to the archive. */
  readonly base: string;
  readonly flags: string;
}

export class MaildirClaimer implements Claimer {
  private readonly groupDir: string;
  private readonly inProgressDir: string;
  private readonly archiveDir: string;
  private readonly junkDir: string;
  private readonly candidates = new CandidateQueue();
  private readonly watchers: fs.FSWatcher[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly logger: Logger;
  // Set by a file-system event: the candidate queue may be missing files.
  private changed = true;
  private closed = false;

  constructor(private readonly options: MaildirClaimerOptions) {
    const { root, layout, topic, group, consumer } = options;
    this.groupDir = folderPath(root, layout.group(topic, group));
    this.inProgressDir = folderPath(root, layout.inProgress(topic, group, consumer));
    this.archiveDir = folderPath(root, layout.archive(topic, group));
    this.junkDir = folderPath(root, layout.junk(topic, group));
    this.logger = options.logger.child({ topic, group, consumer });
  }

  start(): void {
    const { root, layout, topic, group, consumer } = this.options;
    ensureFolder(root, layout.inProgress(topic, group, consumer));

    // inotify tells us about new files at once; when it cannot (too many watches, a network
    // file system), the consumer loop's periodic claims still find them by scanning.
    for (const sub of ['new', 'cur'] as const) {
      try {
        const watcher = fs.watch(join(this.groupDir, sub), (_event, name) => {
          this.onFileEvent(sub, name);
        });
        watcher.on('error', (err) => {
          this.logger.warn({ event: 'watch.failed', err: String(err) });
        });
        this.watchers.push(watcher);
      } catch (err) {
        this.logger.warn({ event: 'watch.unavailable', dir: sub, err: String(err) });
      }
    }
  }

  async claim(max: number): Promise<Claim[]> {
    this.assertOpen();
    if (this.candidates.size === 0 || this.changed) {
      this.scan();
    }

    const claims: MaildirClaim[] = [];
    while (claims.length < max) {
      const candidate = this.candidates.take();
      if (candidate === undefined) {
        break;
      }
      const { base, flags } = parseName(candidate.name);
      if (flags.includes(FLAG.trashed)) {
        continue;
      }
      const source = join(this.groupDir, candidate.dir, candidate.name);
      const location = join(this.inProgressDir, 'cur', curName(base, flags));
      try {
        fs.renameSync(source, location);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') {
          continue; // another consumer won this one
        }
        throw storageError(`cannot claim ${source}`, err);
      }
      const raw = this.readClaimed(location);
      if (raw !== undefined) {
        claims.push({ location, raw, base, flags });
      }
    }
    return claims;
  }

  waitForMessages(timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (this.changed || this.candidates.size > 0 || this.closed || signal.aborted) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener('abort', done);
      this.waiters.add(done);
    });
  }

  async ack(claims: Claim[]): Promise<void> {
    const lost: string[] = [];
    for (const claim of claims as MaildirClaim[]) {
      const flags = withFlag(claim.flags, FLAG.seen);
      const target = join(this.archiveDir, 'cur', curName(claim.base, flags));
      try {
        this.moveOwn(claim, target);
      } catch (err) {
        if (!isMailbusError(err, ERROR_CODES.LEASE_LOST)) {
          throw err;
        }
        lost.push(claim.location);
      }
    }
    await this.syncDirs([join(this.archiveDir, 'cur'), join(this.inProgressDir, 'cur')]);
    if (lost.length > 0) {
      throw new LeaseLostError(`${lost.length} claimed messages were gone at ack`, lost);
    }
  }

  async release(claim: Claim, options: ReleaseOptions = {}): Promise<void> {
    const own = claim as MaildirClaim;
    const flagged = own.flags.includes(FLAG.flagged);
    if (options.raw === undefined) {
      const target = flagged
        ? join(this.groupDir, 'cur', curName(own.base, own.flags))
        : join(this.groupDir, 'new', own.base);
      this.moveOwn(own, target);
      await this.syncDirs([join(this.groupDir, flagged ? 'cur' : 'new')]);
      return;
    }
    await this.replace(own, this.groupDir, options.raw, flagged);
  }

  async deadLetter(claim: Claim, raw: Buffer): Promise<void> {
    await this.replace(claim as MaildirClaim, this.junkDir, raw, false);
  }

  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    this.closed = true;
    for (const watcher of this.watchers) {
      watcher.close();
    }
    for (const wake of [...this.waiters]) {
      wake();
    }
    this.removeInProgressFolder();
    this.options.onClose();
  }

  private onFileEvent(dir: 'new' | 'cur', name: string | null): void {
    if (name && !name.startsWith('.')) {
      const { flags } = parseName(name);
      this.candidates.add({ dir, name, flagged: flags.includes(FLAG.flagged) });
    } else {
      this.changed = true;
    }
    for (const wake of [...this.waiters]) {
      wake();
    }
  }

  private scan(): void {
    this.changed = false;
    for (const dir of ['new', 'cur'] as const) {
      for (const name of listDir(join(this.groupDir, dir))) {
        if (name.startsWith('.')) {
          continue;
        }
        const { flags } = parseName(name);
        this.candidates.add({ dir, name, flagged: flags.includes(FLAG.flagged) });
      }
    }
  }

  /** Reads a file this consumer just claimed; one that is not a regular file is set aside. */
  private readClaimed(location: string): Buffer | undefined {
    try {
      const stat = fs.lstatSync(location);
      if (!stat.isFile()) {
        this.logger.warn({ event: 'claim.not_a_file', location });
        fs.renameSync(location, location.replace(/:2,[A-Za-z]*$/, ':2,T'));
        return undefined;
      }
      return fs.readFileSync(location);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') {
        return undefined;
      }
      throw storageError(`cannot read claimed message ${location}`, err);
    }
  }

  /** Renames a claimed file; ENOENT means it is no longer this consumer's to move. */
  private moveOwn(claim: MaildirClaim, target: string): void {
    try {
      fs.renameSync(claim.location, target);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') {
        throw new MailbusError(
          ERROR_CODES.LEASE_LOST,
          `claimed message ${claim.location} is gone: its lease was lost`,
        );
      }
      throw storageError(`cannot move ${claim.location}`, err);
    }
  }

  /** Delivers `raw` as a new message into `folderDir`, then removes the claimed file. */
  private async replace(
    claim: MaildirClaim,
    folderDir: string,
    raw: Buffer,
    flagged: boolean,
  ): Promise<void> {
    if (!fs.existsSync(claim.location)) {
      throw new MailbusError(
        ERROR_CODES.LEASE_LOST,
        `claimed message ${claim.location} is gone: its lease was lost`,
      );
    }
    const base = uniqueBaseName(raw.length);
    const target = flagged
      ? join(folderDir, 'cur', curName(base, FLAG.flagged))
      : join(folderDir, 'new', base);
    try {
      const tmp = await writeTmp(folderDir, base, raw, this.options.durable);
      fs.renameSync(tmp, target);
    } catch (err) {
      throw storageError(`cannot write into ${folderDir}`, err);
    }
    await this.syncDirs([join(folderDir, flagged ? 'cur' : 'new')]);
    fs.rmSync(claim.location, { force: true });
  }

  private async syncDirs(dirs: string[]): Promise<void> {
    if (!this.options.durable) {
      return;
    }
    try {
      await Promise.all(dirs.map((dir) => fsyncPath(dir)));
    } catch (err) {
      throw storageError('cannot sync a folder', err);
    }
  }

  private removeInProgressFolder(): void {
    const left = [
      ...listDir(join(this.inProgressDir, 'cur')),
      ...listDir(join(this.inProgressDir, 'new')),
    ];
    if (left.length > 0) {
      this.logger.warn({ event: 'claimer.closed_with_claims', count: left.length });
      return;
    }
    fs.rmSync(this.inProgressDir, { recursive: true, force: true });
  }

  private assertOpen(): void {
    if (this.closed) {
      throw new MailbusError(ERROR_CODES.CLOSED, 'claimer is closed');
    }
  }
}
