// Hands out one group's waiting messages to one consumer. A claim renames the file from the
// group's folder into this consumer's in-progress folder: rename(2) is atomic, so when several
// processes reach for the same file exactly one succeeds and the others see ENOENT.
//
// Leases: each consumer holds its claims in a folder of its own, and proves it is alive by
// touching that folder's `maildirfolder` file (its mtime is the last heartbeat). Another
// consumer of the group that finds a heartbeat older than the lease takes the files over, one
// rename each, so that a crashed consumer's messages are not lost and none is taken twice.
//
// Scheduled messages (delays and retry backoff) wait in the group's Scheduled folder under a
// name that begins with their due time; a claimer renames the due ones into the group.
//
// Messages with an ordering key are handed out one at a time per key, in publish order: a
// claimer takes a keyed message only when it holds its key's turn (turns.ts).

import * as fs from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ERROR_CODES, LeaseLostError, MailbusError, isMailbusError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { MAX_HEADER_BYTES } from '../../message/decode.js';
import { quarantineHead, quarantinedCopy } from '../../security/quarantine.js';
import type { QuarantineVerdict } from '../../security/quarantine.js';
import type { Layout } from '../layout.js';
import type { Claim, Claimer, ReleaseOptions } from '../store.js';
import { CANDIDATE_WINDOW, CandidateQueue, bestOf } from './candidates.js';
import type { Candidate } from './candidates.js';
import {
  FLAG,
  compareDeliveryOrder,
  curName,
  keyDigestOf,
  nameTimeMs,
  parseName,
  uniqueBaseName,
  withFlag,
} from './filenames.js';
import {
  FILE_MODE,
  ensureFolder,
  errnoOf,
  folderPath,
  fsyncPath,
  listDir,
  storageError,
  streamDir,
  writeTmp,
} from './folders.js';
import { KeyTurns } from './turns.js';

export interface MaildirClaimerOptions {
  root: string;
  layout: Layout;
  topic: string;
  group: string;
  consumer: string;
  durable: boolean;
  logger: Logger;
  /** Files larger than this are claimed unread (see ClaimerOptions). */
  maxMessageBytes?: number;
  /** Every folder of the Maildir++, by mailbox name. */
  folders: () => string[];
  onClose: () => void;
}

/** Most names kept while waiting for the file events of this claimer's own claims. */
const TAKEN_NAMES_MAX = 10_000;

/** How much of an oversized message's header a claim reads: its id and key are near the top. */
const OVERSIZED_PEEK_BYTES = 64 * 1024;

/** Least time between two looks at the Scheduled folder when nothing there is due. */
const SCHEDULE_CHECK_MS = 250;

/** What a claim read of its file. */
interface ClaimedText {
  raw: Buffer;
  size: number;
  oversized: boolean;
}

interface MaildirClaim extends Claim {
  /** The file's base name, kept when it moves on to the archive. */
  readonly base: string;
  readonly flags: string;
}

/**
 * How long a claimer goes without looking at the Scheduled folder when it knows of nothing due
 * there: a message scheduled by another process is seen by its file event, or by then.
 */
const POLL_SCHEDULE_MS = 1000;

/**
 * Which keyed messages may be claimed now, as one claim() call sees it: the first waiting
 * message of each key, and the messages that hold their key's turn.
 */
class TurnView {
  constructor(
    private readonly heads: Map<string, string>,
    private readonly holders: Map<string, Set<string>>,
  ) {}

  /**
   * A message that holds its key's turn may be claimed again (it came back from a retry, a lost
   * lease, a stopped consumer); when no message holds it, only the first waiting message may.
   */
  mayClaim(keyDigest: string, base: string): boolean {
    const holding = this.holders.get(keyDigest);
    if (holding !== undefined) {
      return holding.has(base);
    }
    return this.heads.get(keyDigest) === base;
  }

  /** Notes a turn taken within this claim() call. */
  take(keyDigest: string, base: string): void {
    this.holders.set(keyDigest, new Set([base]));
  }
}

/** The last heartbeat of the consumer whose in-progress folder this is (0 if unknown). */
export function heartbeatMs(dir: string): number {
  try {
    return fs.statSync(join(dir, 'maildirfolder')).mtimeMs;
  } catch {
    return 0;
  }
}

/** Removes a folder only if it holds no message: never a claim that arrived meanwhile. */
function removeEmptyFolder(dir: string): void {
  try {
    for (const sub of ['cur', 'new', 'tmp']) {
      fs.rmdirSync(join(dir, sub));
    }
    fs.rmSync(join(dir, 'maildirfolder'), { force: true });
    fs.rmdirSync(dir);
  } catch {
    // Not empty (its consumer came back and claimed again), or already gone: leave it.
  }
}

export class MaildirClaimer implements Claimer {
  private readonly groupDir: string;
  private readonly inProgressDir: string;
  private readonly archiveDir: string;
  private readonly junkDir: string;
  private readonly quarantineDir: string;
  private readonly scheduledDir: string;
  // Names this claimer moved out of the group whose file events have not come in yet.
  private readonly takenNames = new Set<string>();
  // The claims this consumer has handed out and not yet settled.
  private readonly held = new Set<string>();
  // When the Scheduled folder must be looked at again: its earliest due time, or sooner.
  private nextScheduleCheckMs = 0;
  private readonly candidates = new CandidateQueue();
  private readonly turns: KeyTurns;
  // Keys whose messages a claim passed over because another message held the turn: a change
  // to the turns of one of them sends the claimer back to the group.
  private readonly waitingKeys = new Set<string>();
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
    this.quarantineDir = folderPath(root, layout.quarantine(topic, group));
    this.scheduledDir = folderPath(root, layout.scheduled(topic, group));
    this.turns = new KeyTurns(join(root, 'mailbus-turns', layout.group(topic, group)), consumer);
    this.logger = options.logger.child({ topic, group, consumer });
  }

  start(): void {
    const { root, layout, topic, group, consumer } = this.options;
    ensureFolder(root, layout.inProgress(topic, group, consumer));

    // inotify tells us about new files at once; when it cannot (too many watches, a network
    // file system), the consumer loop's periodic claims still find them by scanning.
    for (const sub of ['new', 'cur'] as const) {
      this.watch(join(this.groupDir, sub), (name) => this.onFileEvent(sub, name));
    }
    ensureFolder(root, layout.scheduled(topic, group));
    for (const sub of ['new', 'cur'] as const) {
      this.watch(join(this.scheduledDir, sub), () => {
        this.nextScheduleCheckMs = 0;
        this.wake();
      });
    }
    this.turns.ensure();
    this.watch(this.turns.dir, (name) => this.onTurnEvent(name));
  }

  private watch(dir: string, onEvent: (name: string | null) => void): void {
    try {
      const watcher = fs.watch(dir, (_event, name) => onEvent(name));
      watcher.on('error', (err) => {
        this.logger.warn({ event: 'watch.failed', dir, err: String(err) });
      });
      this.watchers.push(watcher);
    } catch (err) {
      this.logger.warn({ event: 'watch.unavailable', dir, err: String(err) });
    }
  }

  async claim(max: number): Promise<Claim[]> {
    this.assertOpen();
    if (Date.now() >= this.nextScheduleCheckMs) {
      this.promoteDue();
    }
    if (this.candidates.size === 0 || this.changed) {
      this.scan();
    }

    const claims: MaildirClaim[] = [];
    let turns: TurnView | undefined;
    while (claims.length < max) {
      const candidate = this.candidates.take();
      if (candidate === undefined) {
        break;
      }
      const { base, flags } = parseName(candidate.name);
      if (flags.includes(FLAG.trashed)) {
        continue;
      }

      // A keyed message needs its key's turn, recorded before the claim (turns.ts says why).
      const keyDigest = keyDigestOf(base);
      let record: string | undefined;
      if (keyDigest !== undefined) {
        turns ??= this.turnView();
        if (!turns.mayClaim(keyDigest, base)) {
          this.waitingKeys.add(keyDigest);
          continue;
        }
        record = this.turns.write(keyDigest, base);
        turns.take(keyDigest, base);
      }

      const source = join(this.groupDir, candidate.dir, candidate.name);
      const location = join(this.inProgressDir, 'cur', curName(base, flags));
      if (!this.renameClaim(source, location)) {
        if (record !== undefined) {
          this.turns.removeRecord(record);
        }
        continue; // another consumer won this one
      }
      this.rememberTaken(candidate.name);
      const text = this.readClaimed(location);
      if (text !== undefined) {
        claims.push({ location, ...text, base, flags });
      }
    }
    return claims;
  }

  waitForMessages(timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (this.changed || this.candidates.size > 0 || this.closed || signal.aborted) {
      return Promise.resolve();
    }
    // Wake no later than the next scheduled message is due.
    timeoutMs = Math.max(0, Math.min(timeoutMs, this.nextScheduleCheckMs - Date.now()));
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
    let moved = 0;
    for (const claim of claims as MaildirClaim[]) {
      const flags = withFlag(claim.flags, FLAG.seen);
      const target = join(this.archiveDir, 'cur', curName(claim.base, flags));
      try {
        this.moveOwn(claim, target);
        this.endTurn(claim.base);
        moved += 1;
      } catch (err) {
        if (!isMailbusError(err, ERROR_CODES.LEASE_LOST)) {
          throw err;
        }
        lost.push(claim.location);
      }
    }
    if (moved > 0) {
      await this.syncDirs([join(this.archiveDir, 'cur'), join(this.inProgressDir, 'cur')]);
    }
    if (lost.length > 0) {
      throw new LeaseLostError(`${lost.length} claimed messages were gone at ack`, lost);
    }
  }

  async release(claim: Claim, options: ReleaseOptions = {}): Promise<void> {
    const own = claim as MaildirClaim;
    const flagged = own.flags.includes(FLAG.flagged);
    const dueMs = options.notBefore?.getTime() ?? 0;
    if (dueMs > Date.now()) {
      await this.replace(own, this.scheduledDir, options.raw ?? own.raw, flagged, dueMs, true);
      this.nextScheduleCheckMs = Math.min(this.nextScheduleCheckMs, dueMs);
      return;
    }
    if (options.raw === undefined) {
      const target = flagged
        ? join(this.groupDir, 'cur', curName(own.base, own.flags))
        : join(this.groupDir, 'new', own.base);
      this.moveOwn(own, target);
      await this.syncDirs([join(this.groupDir, flagged ? 'cur' : 'new')]);
      return;
    }
    await this.replace(own, this.groupDir, options.raw, flagged, undefined, true);
  }

  async deadLetter(claim: Claim, raw: Buffer): Promise<void> {
    const own = claim as MaildirClaim;
    await this.replace(own, this.junkDir, raw, false);
    this.endTurn(own.base);
  }

  async quarantine(claim: Claim, verdict: QuarantineVerdict): Promise<void> {
    const own = claim as MaildirClaim;
    if (own.oversized) {
      await this.replaceStreaming(own, this.quarantineDir, verdict);
    } else {
      await this.replace(own, this.quarantineDir, quarantinedCopy(own.raw, verdict), false);
    }
    this.endTurn(own.base); // out of the flow until released, like a dead letter
  }

  async heartbeat(): Promise<void> {
    this.assertOpen();
    const now = new Date();
    const { root, layout, topic, group, consumer } = this.options;
    try {
      // Made again if another consumer recovered it while this one was too slow to heartbeat.
      ensureFolder(root, layout.inProgress(topic, group, consumer));
      fs.utimesSync(join(this.inProgressDir, 'maildirfolder'), now, now);
    } catch (err) {
      throw storageError(`cannot record the heartbeat of ${this.options.consumer}`, err);
    }
  }

  async recover(leaseMs: number): Promise<Claim[]> {
    this.assertOpen();
    const { layout, topic, group, consumer } = this.options;
    const prefix = layout.inProgress(topic, group) + layout.delimiter;
    const own = layout.inProgress(topic, group, consumer);
    const expiredBefore = Date.now() - leaseMs;
    const claims: MaildirClaim[] = this.adoptOrphans();
    this.sweepStaleTurns(leaseMs);

    for (const mailbox of this.options.folders()) {
      if (!mailbox.startsWith(prefix) || mailbox === own) {
        continue;
      }
      const dir = folderPath(this.options.root, mailbox);
      if (heartbeatMs(dir) >= expiredBefore) {
        continue;
      }
      for (const sub of ['cur', 'new']) {
        for (const name of listDir(join(dir, sub))) {
          const { base, flags } = parseName(name);
          const location = join(this.inProgressDir, 'cur', curName(base, flags));
          try {
            fs.renameSync(join(dir, sub, name), location);
          } catch (err) {
            if (errnoOf(err) === 'ENOENT') {
              continue; // another consumer recovered this one first
            }
            throw storageError(`cannot recover ${join(dir, sub, name)}`, err);
          }
          this.held.add(location);
          const text = this.readClaimed(location);
          if (text !== undefined) {
            claims.push({ location, ...text, base, flags });
          }
        }
      }
      this.logger.warn({ event: 'lease.recovered', from: mailbox, count: claims.length });
      removeEmptyFolder(dir);
    }
    return claims;
  }

  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    this.closed = true;
    for (const watcher of this.watchers) {
      watcher.close();
    }
    this.wake();
    this.removeInProgressFolder();
    this.options.onClose();
  }

  /**
   * Files in this consumer's own folder that it never handed out: left by an earlier process
   * that ran under the same consumer id and stopped without settling them.
   */
  private adoptOrphans(): MaildirClaim[] {
    const orphans: MaildirClaim[] = [];
    for (const name of listDir(join(this.inProgressDir, 'cur'))) {
      const location = join(this.inProgressDir, 'cur', name);
      if (this.held.has(location)) {
        continue;
      }
      const text = this.readClaimed(location);
      if (text !== undefined) {
        const { base, flags } = parseName(name);
        this.held.add(location);
        orphans.push({ location, ...text, base, flags });
      }
    }
    return orphans;
  }

  private onFileEvent(dir: 'new' | 'cur', name: string | null): void {
    // Our own claims move files out of the group, and inotify reports those too.
    if (name && this.takenNames.delete(name)) {
      return;
    }
    if (name && !name.startsWith('.')) {
      const { flags } = parseName(name);
      const flagged = flags.includes(FLAG.flagged);
      // A name the full window leaves out is found by the scan once the window is used up;
      // a flagged one must not wait behind it.
      if (!this.candidates.add({ dir, name, flagged }) && flagged) {
        this.changed = true;
      }
    } else {
      this.changed = true;
    }
    this.wake();
  }

  private onTurnEvent(name: string | null): void {
    const keyDigest = name?.split('~')[0];
    if (keyDigest === undefined || this.waitingKeys.has(keyDigest)) {
      this.changed = true;
      this.wake();
    }
  }

  /**
   * The turns as this claim sees them. The group is listed before the records are read: a
   * message of a key missing from the listing was claimed, and its claimer's record, written
   * before that claim, is then in the read.
   */
  private turnView(): TurnView {
    const heads = new Map<string, string>();
    for (const sub of ['new', 'cur']) {
      for (const name of listDir(join(this.groupDir, sub))) {
        const { base, flags } = parseName(name);
        const keyDigest = keyDigestOf(base);
        if (keyDigest === undefined || flags.includes(FLAG.trashed)) {
          continue;
        }
        const head = heads.get(keyDigest);
        if (head === undefined || compareDeliveryOrder(base, head) < 0) {
          heads.set(keyDigest, base);
        }
      }
    }
    return new TurnView(heads, this.turns.holders());
  }

  private endTurn(base: string): void {
    const keyDigest = keyDigestOf(base);
    if (keyDigest !== undefined) {
      this.turns.end(keyDigest, base);
    }
  }

  /**
   * Removes turn records that name no unsettled message: left by a consumer that died between
   * settling a message and ending its turn, or between recording a turn and losing the claim.
   * Only records older than a lease are judged, and only a message missing from two looks in a
   * row counts as gone, since a message may be between folders during one look.
   */
  private sweepStaleTurns(leaseMs: number): void {
    const before = Date.now() - leaseMs;
    const old = this.turns.records().filter((record) => record.writtenMs < before);
    if (old.length === 0) {
      return;
    }
    const first = this.unsettledBases();
    const suspects = old.filter((record) => !first.has(record.base));
    if (suspects.length === 0) {
      return;
    }
    const second = this.unsettledBases();
    for (const record of suspects) {
      if (!second.has(record.base)) {
        this.turns.removeRecord(record.path);
        this.logger.warn({ event: 'turn.stale', base: record.base });
      }
    }
  }

  /** The base names of every message of the group that is not settled yet. */
  private unsettledBases(): Set<string> {
    const { layout, topic, group } = this.options;
    const prefix = layout.inProgress(topic, group) + layout.delimiter;
    const dirs = [this.groupDir, this.scheduledDir];
    for (const mailbox of this.options.folders()) {
      if (mailbox.startsWith(prefix)) {
        dirs.push(folderPath(this.options.root, mailbox));
      }
    }
    const bases = new Set<string>();
    for (const dir of dirs) {
      for (const sub of ['new', 'cur']) {
        for (const name of listDir(join(dir, sub))) {
          bases.add(parseName(name).base);
        }
      }
    }
    return bases;
  }

  private wake(): void {
    for (const wake of [...this.waiters]) {
      wake();
    }
  }

  /**
   * Moves the scheduled messages that are due into the group, where claims find them. Each move
   * is a rename, so concurrent claimers never move one message twice; the name keeps its time,
   * so a due message sorts where its time puts it.
   */
  private promoteDue(): void {
    const now = Date.now();
    let nextDue = now + POLL_SCHEDULE_MS;
    for (const sub of ['new', 'cur'] as const) {
      for (const name of listDir(join(this.scheduledDir, sub))) {
        const dueMs = nameTimeMs(name);
        if (dueMs > now) {
          nextDue = Math.min(nextDue, dueMs);
          continue;
        }
        try {
          fs.renameSync(join(this.scheduledDir, sub, name), join(this.groupDir, sub, name));
          this.changed = true;
        } catch (err) {
          if (errnoOf(err) !== 'ENOENT') {
            throw storageError(`cannot move a due message out of ${this.scheduledDir}`, err);
          }
        }
      }
    }
    this.nextScheduleCheckMs = Math.max(nextDue, now + SCHEDULE_CHECK_MS);
  }

  /** Fills the window with the best waiting messages of the group, streaming its folders. */
  private scan(): void {
    this.changed = false;
    this.waitingKeys.clear();
    this.candidates.clear();
    for (const candidate of bestOf(this.waitingFiles(), CANDIDATE_WINDOW)) {
      this.candidates.add(candidate);
    }
  }

  /** The group's files in new/ and cur/, one at a time: never the whole listing at once. */
  private *waitingFiles(): Generator<Candidate> {
    for (const dir of ['new', 'cur'] as const) {
      for (const name of streamDir(join(this.groupDir, dir))) {
        if (!name.startsWith('.')) {
          const { flags } = parseName(name);
          yield { dir, name, flagged: flags.includes(FLAG.flagged) };
        }
      }
    }
  }

  /**
   * Reads a file this consumer just claimed; one that is not a regular file is set aside. The
   * size comes first, from lstat (not from the S= of the name, which a sender can write): a
   * file over maxMessageBytes is not read, only the top of its header.
   */
  private readClaimed(location: string): ClaimedText | undefined {
    try {
      const stat = fs.lstatSync(location);
      if (!stat.isFile()) {
        this.logger.warn({ event: 'claim.not_a_file', location });
        fs.renameSync(location, location.replace(/:2,[A-Za-z]*$/, ':2,T'));
        return undefined;
      }
      const limit = this.options.maxMessageBytes;
      if (limit !== undefined && stat.size > limit) {
        const raw = readPrefix(location, OVERSIZED_PEEK_BYTES);
        return { raw, size: stat.size, oversized: true };
      }
      const raw = fs.readFileSync(location);
      return { raw, size: raw.length, oversized: false };
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') {
        return undefined;
      }
      throw storageError(`cannot read claimed message ${location}`, err);
    }
  }

  /**
   * Claims one file by renaming it into this consumer's folder; false when another consumer
   * had it first. A folder that is gone (this consumer was taken for dead while it was only
   * slow, and its folder was recovered) is made again, so the consumer carries on.
   */
  private renameClaim(source: string, location: string): boolean {
    for (let tries = 0; tries < 2; tries += 1) {
      try {
        fs.renameSync(source, location);
        this.held.add(location);
        return true;
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') {
          throw storageError(`cannot claim ${source}`, err);
        }
        if (fs.existsSync(join(this.inProgressDir, 'cur')) || !fs.existsSync(source)) {
          return false;
        }
        const { root, layout, topic, group, consumer } = this.options;
        ensureFolder(root, layout.inProgress(topic, group, consumer));
      }
    }
    return false;
  }

  /** Renames a claimed file; ENOENT means it is no longer this consumer's to move. */
  private moveOwn(claim: MaildirClaim, target: string): void {
    try {
      try {
        fs.renameSync(claim.location, target);
      } catch (err) {
        // A target folder removed by hand is made again; a missing claim is a lost lease.
        if (errnoOf(err) !== 'ENOENT' || !fs.existsSync(claim.location)) {
          throw err;
        }
        this.ensureParentFolder(target);
        fs.renameSync(claim.location, target);
      }
      this.held.delete(claim.location);
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

  /** Remembers a name this claimer moved out, to ignore the file event that reports it. */
  private rememberTaken(name: string): void {
    if (this.takenNames.size >= TAKEN_NAMES_MAX) {
      this.takenNames.clear(); // events lost or not delivered: forget rather than grow
    }
    this.takenNames.add(name);
  }

  /** Makes the Maildir folder that `path` (a file in its cur/ or new/) belongs to. */
  private ensureParentFolder(path: string): void {
    const folderDir = dirname(dirname(path));
    ensureFolder(this.options.root, basename(folderDir).slice(1));
  }

  /**
   * Delivers `raw` as a new message into `folderDir`, then removes the claimed file. With
   * `keepsTurn` (a retry, a release), the new message takes over the claimed one's key turn.
   */
  private async replace(
    claim: MaildirClaim,
    folderDir: string,
    raw: Buffer,
    flagged: boolean,
    dueMs?: number,
    keepsTurn = false,
  ): Promise<void> {
    if (!fs.existsSync(claim.location)) {
      throw new MailbusError(
        ERROR_CODES.LEASE_LOST,
        `claimed message ${claim.location} is gone: its lease was lost`,
      );
    }
    const keyDigest = keepsTurn ? keyDigestOf(claim.base) : undefined;
    const base = uniqueBaseName(raw.length, dueMs, keyDigest);
    if (keyDigest !== undefined) {
      // Recorded before the new file appears, so the turn is never without a holder.
      this.turns.write(keyDigest, base);
    }
    const target = flagged
      ? join(folderDir, 'cur', curName(base, FLAG.flagged))
      : join(folderDir, 'new', base);
    try {
      if (!fs.existsSync(join(folderDir, 'tmp'))) {
        this.ensureParentFolder(target);
      }
      const tmp = await writeTmp(folderDir, base, raw, this.options.durable);
      fs.renameSync(tmp, target);
    } catch (err) {
      throw storageError(`cannot write into ${folderDir}`, err);
    }
    await this.syncDirs([join(folderDir, flagged ? 'cur' : 'new')]);
    fs.rmSync(claim.location, { force: true });
    this.held.delete(claim.location);
    if (keyDigest !== undefined) {
      this.turns.end(keyDigest, claim.base);
    }
  }

  /**
   * Quarantines an oversized claim without loading it: the new file is its rewritten header
   * (read up to MAX_HEADER_BYTES) followed by the rest of the claimed file, streamed from disk.
   */
  private async replaceStreaming(
    claim: MaildirClaim,
    folderDir: string,
    verdict: QuarantineVerdict,
  ): Promise<void> {
    if (!fs.existsSync(claim.location)) {
      throw new MailbusError(
        ERROR_CODES.LEASE_LOST,
        `claimed message ${claim.location} is gone: its lease was lost`,
      );
    }
    const { head, from } = quarantineHead(readPrefix(claim.location, MAX_HEADER_BYTES), verdict);
    const base = uniqueBaseName(head.length + claim.size - from);
    const tmp = join(folderDir, 'tmp', base);
    const target = join(folderDir, 'new', base);
    try {
      if (!fs.existsSync(join(folderDir, 'tmp'))) {
        this.ensureParentFolder(target);
      }
      await writeJoined(tmp, head, claim.location, from, this.options.durable);
      fs.renameSync(tmp, target);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw storageError(`cannot write into ${folderDir}`, err);
    }
    await this.syncDirs([join(folderDir, 'new')]);
    fs.rmSync(claim.location, { force: true });
    this.held.delete(claim.location);
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

/** The chunk in which an oversized message is copied: the most of it in memory at once. */
const COPY_CHUNK_BYTES = 256 * 1024;

/**
 * Writes `head` and then the file `source` from byte `from` on into a new file `path`, through
 * one buffer that is used again for every chunk: a stream would allocate a new one per chunk,
 * and the garbage of a 20 MB copy would sit in memory until the next collection.
 */
async function writeJoined(
  path: string,
  head: Buffer,
  source: string,
  from: number,
  durable: boolean,
): Promise<void> {
  const out = await fs.promises.open(path, 'wx', FILE_MODE);
  const input = await fs.promises.open(source, 'r');
  try {
    await out.write(head);
    const chunk = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
    for (let position = from; ;) {
      const { bytesRead } = await input.read(chunk, 0, chunk.length, position);
      if (bytesRead === 0) {
        break;
      }
      await out.write(chunk, 0, bytesRead);
      position += bytesRead;
    }
    if (durable) {
      await out.sync();
    }
  } finally {
    await input.close();
    await out.close();
  }
}

/** The first `max` bytes of a file (all of it when shorter). */
function readPrefix(path: string, max: number): Buffer {
  const fd = fs.openSync(path, 'r');
  try {
    const buffer = Buffer.alloc(max);
    const length = fs.readSync(fd, buffer, 0, max, 0);
    return buffer.subarray(0, length);
  } finally {
    fs.closeSync(fd);
  }
}
