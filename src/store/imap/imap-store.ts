// The IMAP store: a queue in the mailboxes of one IMAP account, any server with CONDSTORE,
// MOVE and UIDPLUS (Dovecot 2.3 is the one it is tested against).
//
// How the queue maps onto IMAP, and why:
//
// - Mailbox names come from Layout with the server's own hierarchy delimiter ("." on Dovecot's
//   maildir), so the same queue looks the same in a Maildir and in a mail client.
// - A topic is a mailbox holding a copy of every published message; each group is a child
//   mailbox holding the copies still waiting, with Scheduled, Archive, Junk, Consumers and one
//   In-Progress child per consumer below it. A group receives what is published after it was
//   created, like a mailing-list subscriber, so append() reads the groups with LIST on every
//   call.
// - append() APPENDs each message to the topic mailbox once (\Flagged for high priority; many
//   in one MULTIAPPEND when the server can), learns the UIDs from APPENDUID and gives each group
//   its copy with one server-side UID COPY (Dovecot hard-links on maildir): one upload however
//   many groups there are. Without UIDPLUS it APPENDs to every group instead. It resolves once
//   every group has its copy. publish.ts has the details.
// - Delays and retry backoff share one mechanism: the message waits in the group's Scheduled
//   mailbox with INTERNALDATE = when it falls due, and claimers move it into the group when it
//   does (promote.ts). A delayed append() uploads each group's copy into Scheduled, since COPY
//   cannot change an INTERNALDATE.
// - Leases: each consumer heartbeats into the group's Consumers mailbox, and recover() renames
//   away, and so takes over, the in-progress mailbox of a consumer whose heartbeats stopped
//   (lease.ts).
// - A claim must be exclusive, and on Dovecot UID MOVE is not (two sessions moving the same
//   message both succeed). The exclusive step is a conditional STORE of a claim keyword
//   (UNCHANGEDSINCE, RFC 7162); only its winner moves the message into its in-progress mailbox.
//   claim.ts has the details.
// - A claimer holds two connections, one with the group mailbox selected, IDLEing on it to hear
//   of new mail, and one with its in-progress mailbox selected to settle claims: IMAP acts on
//   the selected mailbox, and re-selecting between every claim and every ack would double the
//   round trips.
// - ack() flags \Seen and moves to Archive, release() moves back (or appends a rewritten copy
//   first and then removes the held one), deadLetter() appends the report to Junk: each in as
//   few commands as IMAP allows, and always copy before remove, so a crash duplicates and never
//   loses.
// - Each connection runs one task at a time; a dropped connection is reopened by the next call
//   after a bounded backoff (connection.ts), and the call that saw the drop fails with
//   ECONNECTION, which a worker retries.

import type { ImapFlow } from 'imapflow';
import type { ImapConfig } from '../../config/connection.js';
import { ERROR_CODES, MailbusError, errorText } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ComposedMessage } from '../../message/compose.js';
import { checkName } from '../../names.js';
import { DEFAULT_GROUP, Layout } from '../layout.js';
import type {
  AppendOptions,
  Claimer,
  ClaimerOptions,
  GroupStats,
  ListOptions,
  PageOptions,
  Place,
  SearchPage,
  SearchQuery,
  Store,
  StoredMessage,
  SubscribeOptions,
  SubscribeResult,
} from '../store.js';
import { CONSUMERS_SEEN_MS, STATE_FOLDERS, groupExists } from '../store.js';
import { PUBLISH_SETTLE_MS, copyTopicIntoGroup, dropLateDuplicates } from './backfill.js';
import { resolveSearch, searchStates } from '../search.js';
import { searchMailboxes } from './search.js';
import type { SearchedMailbox } from './search.js';
import { ImapClaimer } from './claimer.js';
import { newestHeartbeats, readHeartbeats } from './lease.js';
import { isMissingMailbox, listMailboxes } from './commands.js';
import { ImapConnection, REQUIRED_CAPABILITIES } from './connection.js';
import { listOldest, purgeBefore, removeUids } from './folders.js';
import { publishToTopic } from './publish.js';
import type { GroupMailboxes } from './publish.js';
import { readNotBefore } from './schedule.js';

/** The hierarchy delimiter assumed when the server names none (Maildir++ and Dovecot's). */
const DEFAULT_DELIMITER = '.';

// LIST flags of names that are not mailboxes of their own (a parent that only has children).
const NOT_A_MAILBOX = ['\\noselect', '\\nonexistent'];

/** Separates the consumer and the UID in the ref of an in-flight message: `w1#7`. */
const REF_SEPARATOR = '#';

// The consumer part of an in-flight ref: a consumer name, or a tomb's `<dead>~<recoverer>~<hex>`.
const CONSUMER_PART = /^[a-z0-9][a-z0-9_~-]*$/;

// `X-Mailbus-Priority: high` among the header fields: a restored message keeps its priority.
const HIGH_PRIORITY_HEADER = /^x-mailbus-priority:[ \t]*high[ \t]*$/im;

/** One mailbox of a folder, and what prefixes the UID in the refs of its messages. */
interface FolderMailbox {
  mailbox: string;
  refPrefix: string;
}

export interface ImapStoreOptions {
  logger: Logger;
}

export class ImapStore implements Store {
  readonly kind = 'imap';
  readonly location: string;

  private readonly claimers = new Set<ImapClaimer>();
  // Topics this store has created or seen, so append() creates a topic at most once.
  private readonly knownTopics = new Set<string>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly config: ImapConfig,
    private readonly connection: ImapConnection,
    private readonly layout: Layout,
    private readonly log: Logger,
  ) {
    const scheme = config.secure ? 'imaps' : 'imap';
    this.location = `${scheme}://${encodeURIComponent(config.user)}@${config.host}:${config.port}`;
  }

  /** Connects and logs in; fails with EAUTH, ECONNECTION or, lacking an extension, EPROTOCOL. */
  static async open(config: ImapConfig, options: ImapStoreOptions): Promise<ImapStore> {
    const log = options.logger.child({ sub: 'imap-store' });
    const connection = new ImapConnection(config, {
      role: 'store',
      logger: options.logger,
      capabilities: REQUIRED_CAPABILITIES.store,
    });
    try {
      const delimiter = await connection.run(
        { command: 'LIST' },
        async (client) => (await listMailboxes(client, ''))[0]?.delimiter,
      );
      return new ImapStore(config, connection, new Layout(delimiter ?? DEFAULT_DELIMITER), log);
    } catch (err) {
      await connection.close();
      throw err;
    }
  }

  /** Creates the topic, and its default group only while the topic has no group at all. */
  async ensureTopic(topic: string): Promise<void> {
    await this.createMailboxes([this.layout.topic(topic)]);
    if ((await this.listGroups(topic)).length === 0) {
      await this.createMailboxes(this.groupMailboxes(topic, DEFAULT_GROUP));
    }
    this.knownTopics.add(topic);
  }

  async subscribe(
    topic: string,
    group: string,
    options: SubscribeOptions = {},
  ): Promise<SubscribeResult> {
    const from = options.from;
    if (from === undefined) {
      await this.createMailboxes([this.layout.topic(topic), ...this.groupMailboxes(topic, group)]);
      return { backfilled: 0 };
    }

    // The group is made first, alone and only if it is new; then the topic's messages are
    // copied, and publishes under way are given time to finish before duplicates are dropped.
    const started = Date.now();
    const [groupMailbox, ...below] = this.groupMailboxes(topic, group);
    const mailboxes = {
      topic: this.layout.topic(topic),
      group: groupMailbox as string,
      from,
      onProgress: options.onProgress,
    };
    const copied = await this.connection.run(
      { command: 'UID COPY', mailbox: mailboxes.topic },
      async (client) => {
        await client.mailboxCreate(mailboxes.topic);
        const { created } = await client.mailboxCreate(mailboxes.group);
        if (!created) {
          throw groupExists(topic, group);
        }
        for (const mailbox of below) {
          await client.mailboxCreate(mailbox);
        }
        return await copyTopicIntoGroup(client, mailboxes);
      },
      null,
    );
    const settle = copied.at + PUBLISH_SETTLE_MS - Date.now();
    if (copied.copies.length > 0 && settle > 0) {
      await new Promise((resolve) => setTimeout(resolve, settle));
    }
    const dropped = await this.connection.run(
      { command: 'UID EXPUNGE', mailbox: mailboxes.group },
      (client) => dropLateDuplicates(client, mailboxes.group, copied),
      null,
    );

    const backfilled = copied.copies.length - dropped;
    const ms = Date.now() - started;
    this.log.info({ event: 'group.subscribed', topic, group, from, backfilled, dropped, ms });
    return { backfilled };
  }

  async listTopics(): Promise<string[]> {
    const listed = await this.connection.run({ command: 'LIST' }, (client) =>
      selectable(client, '%'),
    );
    const topics = listed.flatMap((path) => {
      const role = this.layout.parse(path);
      return role?.role === 'topic' ? [role.topic] : [];
    });
    return topics.sort();
  }

  async listGroups(topic: string): Promise<string[]> {
    const pattern = this.layout.topic(topic) + this.layout.delimiter + '%';
    const listed = await this.connection.run({ command: 'LIST' }, (client) =>
      selectable(client, pattern),
    );
    return this.groupsOf(topic, listed).sort();
  }

  async append(
    topic: string,
    messages: ComposedMessage[],
    options: AppendOptions = {},
  ): Promise<void> {
    const topicMailbox = this.layout.topic(topic);
    if (messages.length === 0) {
      return;
    }
    const notBefore = options.notBefore;
    if (notBefore !== undefined && !Number.isFinite(notBefore.getTime())) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        'append() needs notBefore to be a valid Date: the time to hand the messages out',
      );
    }
    if (!this.knownTopics.has(topic)) {
      await this.ensureTopic(topic);
    }

    await this.connection.run(
      { command: 'APPEND', mailbox: topicMailbox },
      async (client) => {
        // Read on every call: a group subscribed a moment ago must get the next message.
        const listGroups = async (): Promise<GroupMailboxes> => {
          const pattern = topicMailbox + this.layout.delimiter + '%';
          const names = this.groupsOf(topic, await selectable(client, pattern));
          return {
            groups: names.map((group) => this.layout.group(topic, group)),
            scheduled: names.map((group) => this.layout.scheduled(topic, group)),
          };
        };
        const later = notBefore !== undefined && notBefore.getTime() > Date.now();

        await publishToTopic(
          client,
          topicMailbox,
          listGroups,
          messages,
          later ? notBefore : undefined,
        );
      },
      topicMailbox,
    );
    // Claimers of this topic in this process hear of the publish at once, without waiting
    // for the server to tell their IDLE (Dovecot does so about half a second later).
    if (notBefore === undefined || notBefore.getTime() <= Date.now()) {
      for (const claimer of this.claimers) {
        claimer.notePublished(topic);
      }
    }
  }

  /** A claimer for the group; the topic and the group are created if they do not exist. */
  async claimer(topic: string, group: string, options: ClaimerOptions): Promise<Claimer> {
    this.checkOpen();
    await this.ensureTopic(topic);
    if (group !== DEFAULT_GROUP) {
      await this.subscribe(topic, group);
    }
    const claimer = await ImapClaimer.open({
      config: this.config,
      layout: this.layout,
      topic,
      group,
      consumer: options.consumer,
      logger: this.log,
      maxMessageBytes: options.maxMessageBytes,
      onClose: (closed) => this.claimers.delete(closed),
    });
    this.claimers.add(claimer);
    return claimer;
  }

  /**
   * Finds caller-chosen ids in the topic's mailbox by a server-side SEARCH on Message-ID. SEARCH
   * SINCE counts whole days, so the hits are then checked against the window by INTERNALDATE.
   * Two publishers racing with one id may both store it: the check and the APPEND are two
   * commands, and IMAP has no way to make them one.
   */
  async storedIds(topic: string, ids: string[], windowMs: number): Promise<Set<string>> {
    const topicMailbox = this.layout.topic(topic);
    const found = new Set<string>();
    if (ids.length === 0 || !(await this.listTopics()).includes(topic)) {
      return found;
    }
    const since = new Date(Date.now() - windowMs);
    await this.connection.run(
      { command: 'SEARCH', mailbox: topicMailbox },
      async (client) => {
        for (const id of ids) {
          const uids = await client.search(
            { header: { 'message-id': `<${id}>` }, since },
            { uid: true },
          );
          if (!uids || uids.length === 0) {
            continue;
          }
          for await (const message of client.fetch(uids, { internalDate: true }, { uid: true })) {
            const stored = new Date(message.internalDate ?? 0).getTime();
            if (stored >= since.getTime()) {
              found.add(id);
            }
          }
        }
      },
      topicMailbox,
    );
    return found;
  }

  /**
   * IMAP keeps no record of its own: an id counts as accepted when the group's Archive holds a
   * message with it stored within the window, that is, once a consumer handled it.
   */
  async acceptId(topic: string, group: string, id: string, windowMs: number): Promise<boolean> {
    const archive = this.layout.archive(topic, group);
    const since = new Date(Date.now() - windowMs);
    return this.connection.run(
      { command: 'SEARCH', mailbox: archive },
      async (client) => {
        // Dovecot matches a Message-ID search against the id without its angle brackets, as a
        // substring (and finds nothing when SINCE is added): the envelope tells an exact match,
        // INTERNALDATE whether it is within the window. The NOOP first: the archive may have
        // been selected here before a consumer moved the message in, and Dovecot searches only
        // messages it has announced to this session.
        await client.noop();
        const uids = await client.search({ header: { 'message-id': id } }, { uid: true });
        if (!uids || uids.length === 0) {
          return false;
        }
        let within = false;
        const query = { internalDate: true, envelope: true };
        for await (const message of client.fetch(uids, query, { uid: true })) {
          const stored = new Date(message.internalDate ?? 0).getTime();
          within ||= message.envelope?.messageId === `<${id}>` && stored >= since.getTime();
        }
        return within;
      },
      archive,
    );
  }

  async stats(topic?: string): Promise<GroupStats[]> {
    if (topic !== undefined) {
      checkName('topic', topic);
    }
    const listed = await this.connection.run({ command: 'LIST' }, (client) =>
      client.list({ statusQuery: { messages: true } }),
    );

    const groups = new Map<string, GroupStats>();
    const entry = (t: string, g: string): GroupStats => {
      const key = `${t}\u0000${g}`;
      let stats = groups.get(key);
      if (!stats) {
        stats = {
          topic: t,
          group: g,
          waiting: 0,
          scheduled: 0,
          inFlight: 0,
          handled: 0,
          dead: 0,
          quarantined: 0,
          consumers: 0,
        };
        groups.set(key, stats);
      }
      return stats;
    };
    for (const mailbox of listed) {
      const role = this.layout.parse(mailbox.path);
      const count = mailbox.status?.messages ?? 0;
      if (!role || role.role === 'topic' || (topic !== undefined && role.topic !== topic)) {
        continue;
      }
      const stats = entry(role.topic, role.group);
      if (role.role === 'group') {
        stats.waiting += count;
      } else if (role.role === 'scheduled') {
        stats.scheduled += count;
      } else if (role.role === 'in-progress') {
        stats.inFlight += role.consumer === undefined ? 0 : count;
      } else if (role.role === 'archive') {
        stats.handled += count;
      } else if (role.role === 'quarantine') {
        stats.quarantined += count;
      } else {
        stats.dead += count;
      }
    }

    // Consumers seen recently: the newest heartbeat of each in the group's Consumers mailbox,
    // read only for groups whose Consumers mailbox holds any (one SELECT and FETCH each).
    const counted = new Map(listed.map((mailbox) => [mailbox.path, mailbox.status?.messages]));
    const seenSince = Date.now() - CONSUMERS_SEEN_MS;
    for (const stats of groups.values()) {
      const mailbox = this.layout.consumers(stats.topic, stats.group);
      if ((counted.get(mailbox) ?? 0) === 0) {
        continue;
      }
      const heartbeats = await this.connection.run(
        { command: 'FETCH', mailbox },
        (client) => readHeartbeats(client, mailbox),
        null,
      );
      stats.consumers = [...newestHeartbeats(heartbeats).values()].filter(
        (heartbeat) => heartbeat.atMs >= seenSince,
      ).length;
    }
    return [...groups.values()].sort(
      (a, b) => a.topic.localeCompare(b.topic) || a.group.localeCompare(b.group),
    );
  }

  async list(place: Place, options: ListOptions = {}): Promise<StoredMessage[]> {
    const limit = options.limit;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        `list() needs limit to be a whole number of messages, 0 or more, not ${limit}`,
      );
    }

    return await this.connection.run(
      { command: 'FETCH' },
      async (client) => {
        const listed: StoredMessage[] = [];
        for (const { mailbox, refPrefix } of await this.folderMailboxes(client, place)) {
          for (const message of await listOldest(client, mailbox, limit)) {
            listed.push({
              ref: refPrefix + message.uid,
              location: `${mailbox}${REF_SEPARATOR}${message.uid}`,
              raw: message.raw,
              storedAt: message.storedAt,
            });
          }
        }
        // In-flight spans mailboxes: the oldest of all, by time and then by where.
        listed.sort(
          (a, b) =>
            a.storedAt.getTime() - b.storedAt.getTime() || a.location.localeCompare(b.location),
        );
        return limit === undefined ? listed : listed.slice(0, limit);
      },
      null,
    );
  }

  async remove(place: Place, refs: string[]): Promise<number> {
    const byMailbox = new Map<string, number[]>();
    for (const ref of refs) {
      const { mailbox, uid } = this.parseRef(place, ref);
      byMailbox.set(mailbox, [...(byMailbox.get(mailbox) ?? []), uid]);
    }
    if (byMailbox.size === 0) {
      return 0;
    }

    return await this.connection.run(
      { command: 'UID EXPUNGE' },
      async (client) => {
        let removed = 0;
        for (const [mailbox, uids] of byMailbox) {
          removed += await removeUids(client, mailbox, uids);
        }
        return removed;
      },
      null,
    );
  }

  async purge(place: Place, before: Date): Promise<number> {
    if (!Number.isFinite(before.getTime())) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        'purge() needs `before` to be a valid Date: messages stored earlier are deleted',
      );
    }

    return await this.connection.run(
      { command: 'UID EXPUNGE' },
      async (client) => {
        let purged = 0;
        for (const { mailbox } of await this.folderMailboxes(client, place)) {
          purged += await purgeBefore(client, mailbox, before);
        }
        return purged;
      },
      null,
    );
  }

  async restore(topic: string, group: string, raw: Buffer): Promise<void> {
    const mailbox = this.layout.group(topic, group);
    // A text listed from Scheduled may carry the line that dates it there: not for consumers.
    raw = readNotBefore(raw)?.original ?? raw;
    const flags = HIGH_PRIORITY_HEADER.test(headerBlock(raw)) ? ['\\Flagged'] : [];
    const deliver = (): Promise<void> =>
      this.connection.run(
        { command: 'APPEND', mailbox },
        async (client) => {
          await client.append(mailbox, raw, flags);
        },
        null,
      );

    // A group that is gone is subscribed again: the message must land somewhere it is seen.
    try {
      await deliver();
    } catch (err) {
      if (!isMissingMailbox(err)) {
        throw err;
      }
      await this.subscribe(topic, group);
      await deliver();
    }
  }

  async search(query: SearchQuery, page?: PageOptions): Promise<SearchPage> {
    const resolved = resolveSearch(query, page);
    const topics = query.topic === undefined ? await this.listTopics() : [query.topic];
    const places: Array<Omit<SearchedMailbox, 'mailbox' | 'refPrefix' | 'separator'>> = [];
    for (const topic of topics) {
      const groups = (await this.listGroups(topic)).filter(
        (group) => query.group === undefined || group === query.group,
      );
      for (const group of groups) {
        for (const state of searchStates(query)) {
          places.push({ topic, group, state });
        }
      }
    }

    return await this.connection.run(
      { command: 'SEARCH' },
      async (client) => {
        const mailboxes: SearchedMailbox[] = [];
        for (const place of places) {
          const folder = STATE_FOLDERS[place.state];
          for (const found of await this.folderMailboxes(client, { ...place, folder })) {
            mailboxes.push({ ...place, ...found, separator: REF_SEPARATOR });
          }
        }
        return searchMailboxes(client, mailboxes, query, resolved);
      },
      null,
    );
  }

  async setPaused(topic: string, group: string, paused: boolean): Promise<void> {
    const mark = this.layout.paused(topic, group);
    await this.connection.run(
      { command: paused ? 'CREATE' : 'DELETE', mailbox: mark },
      async (client) => {
        if (paused) {
          await client.mailboxCreate(mark);
        } else if ((await selectable(client, mark)).includes(mark)) {
          await client.mailboxDelete(mark);
        }
      },
      null,
    );
    this.log.info({ event: paused ? 'group.paused' : 'group.resumed', topic, group });
  }

  async isPaused(topic: string, group: string): Promise<boolean> {
    const mark = this.layout.paused(topic, group);
    const listed = await this.connection.run({ command: 'LIST' }, (client) =>
      selectable(client, mark),
    );
    return listed.includes(mark);
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const claimer of [...this.claimers]) {
      try {
        await claimer.close();
      } catch (err) {
        this.log.debug({ err: errorText(err) }, 'closing a claimer failed');
      }
    }
    await this.connection.close();
  }

  private groupMailboxes(topic: string, group: string): string[] {
    return [
      this.layout.group(topic, group),
      this.layout.scheduled(topic, group),
      this.layout.archive(topic, group),
      this.layout.junk(topic, group),
      this.layout.quarantine(topic, group),
    ];
  }

  // The mailboxes of a folder; in-flight is one per consumer, listed now.
  private async folderMailboxes(client: ImapFlow, place: Place): Promise<FolderMailbox[]> {
    if (place.folder !== 'in-flight') {
      return [{ mailbox: this.folderMailbox(place), refPrefix: '' }];
    }
    const parent = this.layout.inProgress(place.topic, place.group) + this.layout.delimiter;
    const listed = await selectable(client, parent + '%');
    return listed
      .filter((mailbox) => mailbox.startsWith(parent))
      .map((mailbox) => ({ mailbox, refPrefix: mailbox.slice(parent.length) + REF_SEPARATOR }));
  }

  // The one mailbox of a folder other than in-flight.
  private folderMailbox({ topic, group, folder }: Place): string {
    switch (folder) {
      case 'topic':
        return this.layout.topic(topic);
      case 'waiting':
        return this.layout.group(topic, group);
      case 'scheduled':
        return this.layout.scheduled(topic, group);
      case 'archive':
        return this.layout.archive(topic, group);
      case 'junk':
        return this.layout.junk(topic, group);
      case 'quarantine':
        return this.layout.quarantine(topic, group);
    }
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `unknown folder "${String(folder)}": ` +
        'use waiting, scheduled, in-flight, archive, junk, quarantine or topic',
    );
  }

  // A ref as list() made it: the UID, and for in-flight `<consumer>#<uid>`.
  private parseRef(place: Place, ref: string): { mailbox: string; uid: number } {
    const inFlight = place.folder === 'in-flight';
    const at = ref.lastIndexOf(REF_SEPARATOR);
    const consumer = inFlight ? ref.slice(0, Math.max(at, 0)) : undefined;
    const uidText = inFlight ? ref.slice(at + 1) : ref;
    const uid = Number(uidText);
    const validConsumer = consumer === undefined || CONSUMER_PART.test(consumer);
    if (!/^[1-9]\d*$/.test(uidText) || !Number.isSafeInteger(uid) || !validConsumer) {
      const form = inFlight ? '<consumer>#<uid>' : 'a UID';
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        `"${ref}" is not a ref of the ${place.folder} folder: use ${form}, as list() gives it`,
      );
    }
    const mailbox =
      consumer === undefined
        ? this.folderMailbox(place)
        : this.layout.inProgress(place.topic, place.group) + this.layout.delimiter + consumer;
    return { mailbox, uid };
  }

  private async createMailboxes(mailboxes: string[]): Promise<void> {
    await this.connection.run({ command: 'CREATE' }, async (client) => {
      // mailboxCreate resolves with created: false when the mailbox exists (ALREADYEXISTS).
      for (const mailbox of mailboxes) {
        await client.mailboxCreate(mailbox);
      }
    });
  }

  private groupsOf(topic: string, mailboxes: string[]): string[] {
    return mailboxes.flatMap((path) => {
      const role = this.layout.parse(path);
      return role?.role === 'group' && role.topic === topic ? [role.group] : [];
    });
  }

  private checkOpen(): void {
    if (this.closing) {
      throw new MailbusError(ERROR_CODES.CLOSED, `the IMAP store at ${this.location} is closed`);
    }
  }
}

// The header fields of a message text: everything before the first empty line.
function headerBlock(raw: Buffer): string {
  const text = raw.toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  return end < 0 ? text : text.slice(0, end);
}

/** The mailboxes that match `pattern` and can hold messages. */
async function selectable(client: ImapFlow, pattern: string): Promise<string[]> {
  const listed = await listMailboxes(client, pattern);
  return listed
    .filter(
      (mailbox) => ![...mailbox.flags].some((flag) => NOT_A_MAILBOX.includes(flag.toLowerCase())),
    )
    .map((mailbox) => mailbox.path);
}
