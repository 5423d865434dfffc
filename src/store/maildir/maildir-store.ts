// The embedded store: a queue in a Maildir++ directory, with no daemon. Several processes on one
// machine may publish and consume at once; every claim is a rename(2), which exactly one process
// wins. The same directory can be opened by Dovecot, mutt or neomutt, which see the topics and
// groups as folders and the queue's state as flags and folders (see src/store/layout.ts).

import * as fs from 'node:fs';
import { join } from 'node:path';
import type { MaildirConfig } from '../../config/connection.js';
import type { ComposedMessage } from '../../message/compose.js';
import type { Logger } from '../../log.js';
import { DEFAULT_GROUP, Layout } from '../layout.js';
import type {
  AppendOptions,
  Claimer,
  ClaimerOptions,
  GroupStats,
  ListOptions,
  MessageState,
  PageOptions,
  Place,
  SearchHit,
  SearchPage,
  SearchQuery,
  Store,
  StoredMessage,
  SubscribeOptions,
  SubscribeResult,
} from '../store.js';
import { CONSUMERS_SEEN_MS, STATE_FOLDERS, groupExists } from '../store.js';
import { backfillGroup } from './backfill.js';
import {
  MESSAGE_STATES,
  inTimeRange,
  messageIdsOf,
  readsBody,
  readsText,
  resolveSearch,
  searchStates,
  textMatcher,
} from '../search.js';
import { forgetOldIds, recentIds, rememberIds } from './dedup.js';
import { listPlace, purgePlace, removeFromPlace, visitEntries } from './places.js';
import { MaildirClaimer, heartbeatMs } from './claimer.js';
import { keyDigest, orderingKeyOf } from '../../message/ordering.js';
import { keyDigestOf, nameTimeMs, parseName, placement, uniqueBaseName } from './filenames.js';
import { IdIndex, idIndexPath } from './id-index.js';
import { SpareFiles } from './spares.js';
import {
  countMessages,
  createFolder,
  ensureFolder,
  errnoOf,
  ensureRoot,
  folderPath,
  fsyncPath,
  listEntries,
  storageError,
  writeTmp,
} from './folders.js';

/** Maildir++ separates folder levels with a dot. */
const DELIMITER = '.';

/** Longer than the tick of file times: an mtime this close to a scan may hide a change. */
const RACY_MTIME_MS = 100;

export interface MaildirStoreOptions {
  logger: Logger;
}

export class MaildirStore implements Store {
  readonly kind = 'maildir' as const;
  readonly location: string;
  readonly layout = new Layout(DELIMITER);

  private readonly root: string;
  private readonly durable: boolean;
  private readonly logger: Logger;
  private readonly claimers = new Set<MaildirClaimer>();
  // Group lists per topic, valid while the root directory's mtime is unchanged: creating a
  // folder changes it, so a group subscribed a moment ago is seen by the next publish.
  private groupCache = new Map<string, string[]>();
  private groupCacheMtimeMs = -1;
  private groupCacheScannedMs = -1;
  private closed = false;
  private rootMade = false;
  // The id index of each group searched by id, kept between searches (id-index.ts).
  private readonly idIndexes = new Map<string, IdIndex>();
  // Files made ahead for publishes to write into (spares.ts).
  private readonly spares: SpareFiles;

  private constructor(config: MaildirConfig, options: MaildirStoreOptions) {
    this.root = config.path;
    this.location = config.path;
    this.durable = config.fsync;
    this.logger = options.logger.child({ sub: 'maildir', root: config.path });
    this.spares = new SpareFiles(join(config.path, 'tmp'), this.logger);
  }

  /**
   * Opens the Maildir at `config.path`. Nothing is created until something is written: a
   * command that only looks (stats, a typo in a path) leaves the file system as it was.
   */
  static async open(config: MaildirConfig, options: MaildirStoreOptions): Promise<MaildirStore> {
    return new MaildirStore(config, options);
  }

  async ensureTopic(topic: string): Promise<void> {
    this.ensureRootOnce();
    ensureFolder(this.root, this.layout.topic(topic));
    if (this.listGroupsNow(topic).length === 0) {
      await this.subscribe(topic, DEFAULT_GROUP);
    }
  }

  async subscribe(
    topic: string,
    group: string,
    options: SubscribeOptions = {},
  ): Promise<SubscribeResult> {
    this.ensureRootOnce();
    ensureFolder(this.root, this.layout.topic(topic));
    const from = options.from;
    // The group's own folders first: publishers see the group once its folder exists.
    ensureFolder(this.root, this.layout.archive(topic, group));
    ensureFolder(this.root, this.layout.junk(topic, group));
    ensureFolder(this.root, this.layout.quarantine(topic, group));
    ensureFolder(this.root, this.layout.scheduled(topic, group));
    if (from === undefined) {
      ensureFolder(this.root, this.layout.group(topic, group));
      this.logger.info({ event: 'group.subscribed', topic, group });
      return { backfilled: 0 };
    }
    if (!createFolder(this.root, this.layout.group(topic, group))) {
      throw groupExists(topic, group);
    }

    const started = Date.now();
    const backfilled = await backfillGroup({
      root: this.root,
      layout: this.layout,
      folders: () => this.folders(),
      topic,
      group,
      from,
      durable: this.durable,
      onProgress: options.onProgress,
    });
    const ms = Date.now() - started;
    this.logger.info({ event: 'group.subscribed', topic, group, from, backfilled, ms });
    return { backfilled };
  }

  async listTopics(): Promise<string[]> {
    const topics = new Set<string>();
    for (const mailbox of this.folders()) {
      const role = this.layout.parse(mailbox);
      if (role?.role === 'topic') {
        topics.add(role.topic);
      }
    }
    return [...topics].sort();
  }

  async listGroups(topic: string): Promise<string[]> {
    return this.listGroupsNow(topic);
  }

  async append(
    topic: string,
    messages: ComposedMessage[],
    options: AppendOptions = {},
  ): Promise<void> {
    if (messages.length === 0) {
      return;
    }
    await this.ensureTopic(topic);
    const topicDir = folderPath(this.root, this.layout.topic(topic));
    // A delayed message waits in each group's Scheduled folder, under a name that carries its
    // due time; the claimers move it into the group when that time comes.
    const dueMs = options.notBefore?.getTime() ?? 0;
    const scheduled = dueMs > Date.now();
    const groupFolder = (group: string): string =>
      scheduled ? this.layout.scheduled(topic, group) : this.layout.group(topic, group);
    const touched = new Set<string>();

    // Write each message once into the topic's tmp/, durable before anything links to it.
    const written: Array<{ message: ComposedMessage; base: string; tmp: string }> = [];
    try {
      const writes = messages.map(async (message) => {
        const digest = message.key === undefined ? undefined : keyDigest(message.key);
        const base = uniqueBaseName(message.raw.length, scheduled ? dueMs : undefined, digest);
        const tmp = await writeTmp(topicDir, base, message.raw, this.durable, this.spares);
        written.push({ message, base, tmp });
      });
      await Promise.all(writes);
    } catch (err) {
      for (const { tmp } of written) {
        fs.rmSync(tmp, { force: true });
      }
      throw storageError(`cannot write a message into topic ${topic}`, err);
    }

    // The groups are listed only now that the files are in tmp/, and then linked and moved into
    // the inbox without a pause: a group subscribed with a backfill waits for the tmp/ files it
    // sees, and finds every message that missed it in the inbox afterwards (backfill.ts).
    const groups = this.listGroupsNow(topic);
    if (scheduled) {
      groups.forEach((group) => ensureFolder(this.root, this.layout.scheduled(topic, group)));
    }

    // One hard link per group: the copies share the text, and each has its own name and flags.
    // Then the tmp/ file itself moves into the topic's inbox.
    try {
      for (const { message, base, tmp } of written) {
        const target = placement(base, message.priority === 'high');
        for (const group of groups) {
          const groupDir = folderPath(this.root, groupFolder(group));
          fs.linkSync(tmp, join(groupDir, target));
          touched.add(join(groupDir, target.slice(0, 3)));
        }
        // The topic's copy is named for when it was published, even when the groups' copies
        // wait for a later time: its retention counts from the publish.
        const topicBase = scheduled
          ? uniqueBaseName(message.raw.length, undefined, keyDigestOf(base))
          : base;
        fs.renameSync(tmp, join(topicDir, placement(topicBase, message.priority === 'high')));
        touched.add(join(topicDir, target.slice(0, 3)));
      }
    } catch (err) {
      // What is left in tmp/ would hold up a backfilling subscribe, which waits for tmp/ files.
      for (const { tmp } of written) {
        fs.rmSync(tmp, { force: true });
      }
      throw storageError(`cannot deliver a message into topic ${topic}`, err);
    }

    if (this.durable) {
      try {
        await Promise.all([...touched].map((dir) => fsyncPath(dir)));
      } catch (err) {
        throw storageError(`cannot sync the folders of topic ${topic}`, err);
      }
    }
    // Only once the messages are stored: a failed publish must not make its retry a duplicate.
    const chosen = messages.filter((message) => message.chosenId).map((message) => message.id);
    rememberIds(this.root, topic, chosen);
    this.spares.appended();
  }

  async storedIds(topic: string, ids: string[], windowMs: number): Promise<Set<string>> {
    return recentIds(this.root, this.layout.topic(topic), ids, windowMs);
  }

  async claimer(topic: string, group: string, options: ClaimerOptions): Promise<Claimer> {
    await this.ensureTopic(topic);
    if (!this.listGroupsNow(topic).includes(group)) {
      await this.subscribe(topic, group);
    }
    const claimer = new MaildirClaimer({
      root: this.root,
      layout: this.layout,
      topic,
      group,
      consumer: options.consumer,
      durable: this.durable,
      logger: this.logger,
      maxMessageBytes: options.maxMessageBytes,
      folders: () => this.folders(),
      onClose: () => this.claimers.delete(claimer),
    });
    claimer.start();
    this.claimers.add(claimer);
    return claimer;
  }

  async acceptId(topic: string, group: string, id: string, windowMs: number): Promise<boolean> {
    // The markers of a group live beside the topic's: `mailbus-ids/orders.billing/`, a name
    // no topic can have.
    const marker = this.layout.group(topic, group);
    const seen = recentIds(this.root, marker, [id], windowMs).size > 0;
    if (!seen) {
      rememberIds(this.root, marker, [id]);
    }
    return seen;
  }

  async stats(topic?: string): Promise<GroupStats[]> {
    const topics = topic === undefined ? await this.listTopics() : [this.layout.topic(topic)];
    const folders = this.folders();
    const seenSince = Date.now() - CONSUMERS_SEEN_MS;
    const result: GroupStats[] = [];
    for (const name of topics) {
      for (const group of this.listGroupsNow(name)) {
        const inProgress = this.layout.inProgress(name, group);
        const held = folders.filter((mailbox) => mailbox.startsWith(inProgress + DELIMITER));
        const inFlight = held.reduce((sum, mailbox) => sum + countMessages(this.root, mailbox), 0);
        // Each consumer has its in-progress folder, whose maildirfolder mtime is its heartbeat.
        const consumers = held.filter(
          (mailbox) => heartbeatMs(folderPath(this.root, mailbox)) >= seenSince,
        ).length;
        result.push({
          topic: name,
          group,
          waiting: countMessages(this.root, this.layout.group(name, group)),
          scheduled: countMessages(this.root, this.layout.scheduled(name, group)),
          inFlight,
          handled: countMessages(this.root, this.layout.archive(name, group)),
          dead: countMessages(this.root, this.layout.junk(name, group)),
          quarantined: countMessages(this.root, this.layout.quarantine(name, group)),
          consumers,
        });
      }
    }
    return result;
  }

  async list(place: Place, options?: ListOptions): Promise<StoredMessage[]> {
    return listPlace(this.root, this.layout, this.folders(), place, options);
  }

  async remove(place: Place, refs: string[]): Promise<number> {
    return removeFromPlace(this.root, this.layout, this.folders(), place, refs);
  }

  async purge(place: Place, before: Date): Promise<number> {
    if (place.folder === 'topic') {
      forgetOldIds(this.root, this.layout.topic(place.topic));
    }
    if (place.folder === 'archive') {
      forgetOldIds(this.root, this.layout.group(place.topic, place.group));
    }
    return purgePlace(this.root, this.layout, this.folders(), place, before);
  }

  async restore(topic: string, group: string, raw: Buffer): Promise<void> {
    this.ensureRootOnce();
    ensureFolder(this.root, this.layout.group(topic, group));
    const groupDir = folderPath(this.root, this.layout.group(topic, group));
    // A restored message keeps its ordering key (it takes its place in the key's order as if
    // published anew) and its priority: the star is in its header as well as its flags.
    const key = orderingKeyOf(raw);
    const digest = key === undefined ? undefined : keyDigest(key);
    const base = uniqueBaseName(raw.length, undefined, digest);
    const target = placement(base, HIGH_PRIORITY.test(raw.toString('latin1', 0, headerEnd(raw))));
    try {
      const tmp = await writeTmp(groupDir, base, raw, this.durable, this.spares);
      fs.renameSync(tmp, join(groupDir, target));
    } catch (err) {
      throw storageError(`cannot restore a message into ${topic}/${group}`, err);
    }
    if (this.durable) {
      await fsyncPath(join(groupDir, target.slice(0, 3)));
    }
  }

  /**
   * A scan: the file names give each message's time (and the digest of its key), so a query of
   * places and times reads only the page, and a key search reads only the files of that key
   * (and of none, which mail from outside carries). An id search asks the group's id index
   * (id-index.ts) first. A query of ids, keys or headers reads each file's head alone, and turns
   * most files down by a byte search before parsing anything.
   */
  async search(query: SearchQuery, page?: PageOptions): Promise<SearchPage> {
    const { offset, limit } = resolveSearch(query, page);
    const topics = query.topic === undefined ? await this.listTopics() : [query.topic];
    const folders = this.folders();
    const digest = query.key === undefined ? undefined : keyDigest(query.key);

    // Names only: a path, a Date and a hit are made for the few that are read or returned.
    const candidates: Candidate[] = [];
    for (const topic of topics) {
      const groups = this.listGroupsNow(topic).filter(
        (group) => query.group === undefined || group === query.group,
      );
      for (const group of groups) {
        for (const state of searchStates(query)) {
          const place = { topic, group, folder: STATE_FOLDERS[state] };
          visitEntries(this.root, this.layout, folders, place, (dir, name, refPrefix) => {
            const named = digest === undefined ? undefined : keyDigestOf(name);
            if (named !== undefined && named !== digest) {
              return; // another key's message
            }
            const storedAtMs = nameTimeMs(name);
            if (inTimeRange(query, storedAtMs)) {
              candidates.push({ topic, group, state, dir, name, refPrefix, storedAtMs });
            }
          });
        }
      }
    }
    candidates.sort((a, b) => b.storedAtMs - a.storedAtMs);

    const matches = readsText(query) ? textMatcher(query) : undefined;
    const reader = new HeadReader(readsBody(query));
    const indexes = new Map<string, { index: IdIndex; present: Set<string> }>();
    const indexOf = (topic: string, group: string) => {
      const mailbox = this.layout.group(topic, group);
      let used = indexes.get(mailbox);
      if (used === undefined) {
        let index = this.idIndexes.get(mailbox);
        if (index === undefined) {
          index = new IdIndex(idIndexPath(this.root, mailbox));
          this.idIndexes.set(mailbox, index);
        }
        index.refresh();
        used = { index, present: new Set() };
        indexes.set(mailbox, used);
      }
      return used;
    };

    const hits: SearchHit[] = [];
    let total = 0;
    for (const candidate of candidates) {
      const wanted = total >= offset && hits.length < limit;
      let text: Buffer | undefined;
      if (query.id !== undefined) {
        // The index tells most files' ids without opening them.
        const { index, present } = indexOf(candidate.topic, candidate.group);
        const { base } = parseName(candidate.name);
        present.add(base);
        const known = index.get(base);
        if (known !== undefined && !known.includes(query.id)) {
          continue;
        }
        if (known === undefined) {
          text = reader.read(join(candidate.dir, candidate.name));
          if (text === undefined) {
            continue;
          }
          index.add(base, messageIdsOf(text));
        }
      }
      if (matches !== undefined) {
        text ??= reader.read(join(candidate.dir, candidate.name));
        if (text === undefined || !matches(text)) {
          continue;
        }
      }
      if (wanted) {
        const { topic, group, state, dir, name, refPrefix, storedAtMs } = candidate;
        const path = join(dir, name);
        const raw = readIfPresent(path);
        if (raw === undefined) {
          continue;
        }
        const ref = refPrefix + name;
        hits.push({
          topic,
          group,
          state,
          ref,
          location: path,
          storedAt: new Date(storedAtMs),
          raw,
        });
      }
      total += 1;
    }

    // Only a look at every file of a group (every state, any time, any key) knows which of the
    // files the index names are gone.
    const whole =
      searchStates(query).length === MESSAGE_STATES.length &&
      !timed(query) &&
      query.key === undefined;
    for (const { index, present } of indexes.values()) {
      index.flush(whole ? present : undefined);
    }
    return { total, hits };
  }

  async setPaused(topic: string, group: string, paused: boolean): Promise<void> {
    const mark = folderPath(this.root, this.layout.paused(topic, group));
    if (paused) {
      this.ensureRootOnce();
      ensureFolder(this.root, this.layout.paused(topic, group));
    } else {
      fs.rmSync(mark, { recursive: true, force: true });
    }
    this.logger.info({ event: paused ? 'group.paused' : 'group.resumed', topic, group });
  }

  async isPaused(topic: string, group: string): Promise<boolean> {
    return fs.existsSync(folderPath(this.root, this.layout.paused(topic, group)));
  }

  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    this.closed = true;
    await this.spares.close();
    await Promise.all([...this.claimers].map((claimer) => claimer.close()));
  }

  /** Makes the root a Maildir before the first write; after that, it is known to be one. */
  private ensureRootOnce(): void {
    if (!this.rootMade) {
      ensureRoot(this.root);
      this.rootMade = true;
    }
  }

  /** Every folder of the Maildir++, by mailbox name. */
  folders(): string[] {
    return listEntries(this.root)
      .filter((entry) => entry.startsWith('.') && entry !== '.' && entry !== '..')
      .map((entry) => entry.slice(1));
  }

  private listGroupsNow(topic: string): string[] {
    this.layout.topic(topic);
    let mtimeMs: number;
    try {
      mtimeMs = fs.statSync(this.root).mtimeMs;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') {
        return []; // no queue here yet
      }
      throw storageError(`cannot read the Maildir at ${this.root}`, err);
    }
    // File times tick coarsely (a few ms on Linux): a folder made in the same tick as the scan
    // leaves the mtime as it was. So a scan is trusted only when the mtime was already older than
    // that at scan time, as git treats a racily clean index.
    if (mtimeMs !== this.groupCacheMtimeMs || mtimeMs > this.groupCacheScannedMs - RACY_MTIME_MS) {
      this.groupCacheScannedMs = Date.now();
      this.groupCache = this.scanGroups();
      this.groupCacheMtimeMs = mtimeMs;
    }
    return this.groupCache.get(topic) ?? [];
  }

  private scanGroups(): Map<string, string[]> {
    const groups = new Map<string, string[]>();
    for (const mailbox of this.folders()) {
      const role = this.layout.parse(mailbox);
      if (role?.role === 'group' && fs.existsSync(join(folderPath(this.root, mailbox), 'new'))) {
        const list = groups.get(role.topic) ?? [];
        list.push(role.group);
        groups.set(role.topic, list);
      }
    }
    for (const list of groups.values()) {
      list.sort();
    }
    return groups;
  }
}

/** A message file a search may return, by name until it is read or returned. */
interface Candidate {
  topic: string;
  group: string;
  state: MessageState;
  /** The folder's new/ or cur/. */
  dir: string;
  name: string;
  refPrefix: string;
  storedAtMs: number;
}

function timed(query: SearchQuery): boolean {
  return query.since !== undefined || query.before !== undefined;
}

/** Bytes a search reads of a file at first: the whole of a usual message. */
const HEAD_BYTES = 16_384;

/**
 * Reads message files for a scan into one buffer it reuses: a file that fits is read with one
 * read(2), and only the header block is kept when the query needs no body. What it returns is
 * valid until its next read.
 */
class HeadReader {
  private readonly buffer = Buffer.allocUnsafe(HEAD_BYTES);

  constructor(private readonly wholeText: boolean) {}

  read(path: string): Buffer | undefined {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') {
        return undefined; // claimed or removed meanwhile
      }
      throw storageError(`cannot read ${path}`, err);
    }
    try {
      const length = fs.readSync(fd, this.buffer, 0, HEAD_BYTES, 0);
      const head = this.buffer.subarray(0, length);
      if (length < HEAD_BYTES) {
        return head;
      }
      if (!this.wholeText) {
        const end = headerEnd(head);
        if (end < head.length) {
          return head.subarray(0, end);
        }
      }
    } catch (err) {
      throw storageError(`cannot read ${path}`, err);
    } finally {
      fs.closeSync(fd);
    }
    return readIfPresent(path); // a big message, or a header longer than the buffer
  }
}

/** A message file's text; undefined when it was claimed or removed meanwhile. */
function readIfPresent(path: string): Buffer | undefined {
  try {
    return fs.readFileSync(path);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') {
      return undefined;
    }
    throw storageError(`cannot read ${path}`, err);
  }
}

const HIGH_PRIORITY = /^X-Mailbus-Priority:\s*high\s*$/im;

/** Where a message's header ends (the whole text when there is no body). */
function headerEnd(raw: Buffer): number {
  const end = raw.indexOf('\r\n\r\n');
  return end === -1 ? raw.length : end;
}
