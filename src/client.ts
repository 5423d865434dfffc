// The public entry point: connect to a queue, publish, consume, look at it, close it.

import { parseSmtpUrl, parseStoreUrl, redact } from './config/connection.js';
import type { SecretSources } from './config/connection.js';
import { newConsumerId } from './consumer/consumer-id.js';
import {
  DEFAULT_ARCHIVE_RETENTION_MS,
  DEFAULT_BACKOFF_MS,
  DEFAULT_DEAD_RETENTION_MS,
  DEFAULT_GRACE_MS,
  DEFAULT_HANDLER_TIMEOUT_MS,
  DEFAULT_LEASE_MS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_MAX_BACKOFF_MS,
  Worker,
} from './consumer/worker.js';
import type { Handler, WorkerSummary } from './consumer/worker.js';
import { ERROR_CODES, MailbusError } from './errors.js';
import { silentLogger } from './log.js';
import type { Logger } from './log.js';
import { DEFAULT_MAX_MESSAGE_BYTES, composeMessage, defaultFrom } from './message/compose.js';
import type { ComposedMessage } from './message/compose.js';
import type { OutgoingMessage } from './message/message.js';
import { checkName } from './names.js';
import { DeadLetters } from './admin/dead-letters.js';
import { DEFAULT_GROUP } from './store/layout.js';
import { GroupCommit } from './store/group-commit.js';
import { MaildirStore } from './store/maildir/maildir-store.js';
import { MAX_DEDUP_WINDOW_MS } from './store/store.js';
import type { GroupStats, Store } from './store/store.js';
import type { SmtpPublisher } from './transport/smtp.js';

export interface ConnectOptions extends SecretSources {
  /** `maildir:PATH` (the default, ./mailbus-data), `imap://user@host:port` or `imaps://...`. */
  url?: string;
  /** Publish through this SMTP server instead of storing directly: `smtp://host:port`. */
  smtpUrl?: string;
  /**
   * The queue account's email address, `local@domain`, from which topic and group addresses
   * are made (`local+orders.default@domain`). Defaults to the IMAP user when it is an address.
   */
  address?: string;
  /** The From field of published messages. */
  from?: string;
  maxMessageBytes?: number;
  /**
   * How long a caller-chosen message id is remembered: publishing the same id again within this
   * window stores nothing and reports the id (default 5 min; 0 turns it off; at most 1 day).
   */
  dedupWindowMs?: number;
  logger?: Logger;
}

/** Default deduplication window for caller-chosen ids, as SQS FIFO queues keep theirs. */
export const DEFAULT_DEDUP_WINDOW_MS = 5 * 60_000;

export interface ScheduleOptions {
  /** Hand the message out no earlier than this. */
  notBefore?: Date;
  /** Hand the message out no earlier than this many milliseconds from now. */
  delayMs?: number;
}

export type PublishOptions = Omit<OutgoingMessage, 'payload'> & ScheduleOptions;

export interface ConsumeOptions {
  group?: string;
  /** Handlers running at once (default 1). */
  concurrency?: number;
  /** Messages claimed ahead of free handler slots (default: the concurrency). */
  prefetch?: number;
  /** Stop after this many messages were settled. */
  maxMessages?: number;
  /** Stop once nothing has arrived for this many milliseconds. */
  idleTimeoutMs?: number;
  /** Attempts before a failing message is dead-lettered (default 5). */
  maxAttempts?: number;
  /** How long close() waits for running handlers (default 10 s). */
  graceMs?: number;
  /** Lease (visibility timeout): how long claims outlive a silent worker (default 30 s). */
  leaseMs?: number;
  /** First retry delay, doubling per attempt (default 1 s), up to maxBackoffMs (10 min). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Time limit of one attempt (default 5 min). */
  handlerTimeoutMs?: number;
  /** How long handled messages are kept (default 7 days; 0 deletes at ack; Infinity keeps). */
  archiveRetentionMs?: number;
  /** How long dead letters are kept (default 30 days; Infinity keeps). */
  deadRetentionMs?: number;
  /** How long the topic's inbox keeps its copy of each message (default 7 days). */
  topicRetentionMs?: number;
  /** This consumer's id, naming its in-progress mailbox (default host-pid-random). */
  consumer?: string;
}

export type { Handler, WorkerSummary };

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < 1) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `${name} must be a whole number of at least 1, not ${String(value)}`,
    );
  }
  return resolved;
}

function resolveNotBefore(schedule: ScheduleOptions): Date | undefined {
  const { notBefore, delayMs } = schedule;
  if (notBefore !== undefined && delayMs !== undefined) {
    throw new MailbusError(ERROR_CODES.INVALID_OPTION, 'give notBefore or delayMs, not both');
  }
  if (notBefore !== undefined) {
    if (!(notBefore instanceof Date) || Number.isNaN(notBefore.getTime())) {
      throw new MailbusError(ERROR_CODES.INVALID_OPTION, 'notBefore must be a valid Date');
    }
    return notBefore;
  }
  if (delayMs !== undefined) {
    return new Date(Date.now() + nonNegative('delayMs', delayMs, 0));
  }
  return undefined;
}

/** A duration of zero or more milliseconds (Infinity allowed: "forever"). */
function nonNegative(name: string, value: number | undefined, fallback: number): number {
  const resolved = value ?? fallback;
  if (typeof resolved !== 'number' || Number.isNaN(resolved) || resolved < 0) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `${name} must be a number of milliseconds of at least 0, not ${String(value)}`,
    );
  }
  return resolved;
}

/** A duration of more than zero milliseconds, finite. */
function positiveMs(name: string, value: number | undefined, fallback: number): number {
  const resolved = nonNegative(name, value, fallback);
  if (resolved === 0 || !Number.isFinite(resolved)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `${name} must be a finite number of milliseconds above 0, not ${String(value)}`,
    );
  }
  return resolved;
}

export class Mailbus {
  readonly store: Store;
  private readonly smtp: SmtpPublisher | undefined;
  private readonly from: string;
  private readonly maxMessageBytes: number;
  private readonly dedupWindowMs: number;
  private readonly logger: Logger;
  private readonly workers = new Set<Worker>();
  // One group commit per topic that single publishes went to.
  private readonly commits = new Map<string, GroupCommit>();
  private closed = false;

  constructor(
    store: Store,
    options: {
      smtp?: SmtpPublisher;
      from: string;
      maxMessageBytes: number;
      dedupWindowMs: number;
      logger: Logger;
    },
  ) {
    this.store = store;
    this.dedupWindowMs = options.dedupWindowMs;
    this.smtp = options.smtp;
    this.from = options.from;
    this.maxMessageBytes = options.maxMessageBytes;
    this.logger = options.logger;
  }

  /**
   * Publishes one message; resolves with its id once it is stored (or accepted by SMTP).
   * Publishes of one topic that overlap share store appends (group-commit.ts): many callers
   * with publishes outstanding cost one fsync or one MULTIAPPEND per batch, not one each.
   */
  async publish(topic: string, payload: unknown, options: PublishOptions = {}): Promise<string> {
    const { notBefore, delayMs, ...message } = options;
    if (notBefore !== undefined || delayMs !== undefined || this.smtp) {
      // SMTP submits each message on its own, and a delay applies to one whole append.
      const [id] = await this.publishBatch(topic, [{ ...message, payload }], {
        notBefore,
        delayMs,
      });
      return id as string;
    }
    this.assertOpen();
    checkName('topic', topic);
    const composed = await this.compose(topic, { ...message, payload });
    await this.groupCommit(topic).add(composed);
    return composed.id;
  }

  /** Publishes several messages of one topic in one store operation. */
  async publishBatch(
    topic: string,
    messages: OutgoingMessage[],
    schedule: ScheduleOptions = {},
  ): Promise<string[]> {
    this.assertOpen();
    checkName('topic', topic);
    const notBefore = resolveNotBefore(schedule);
    if (notBefore !== undefined && this.smtp) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        'a delayed publish is stored directly: it cannot go through SMTP (leave out --smtp-url)',
      );
    }
    const composed: ComposedMessage[] = [];
    for (const message of messages) {
      composed.push(await this.compose(topic, message));
    }
    await this.storeMessages(topic, composed, notBefore);
    return composed.map((message) => message.id);
  }

  private compose(topic: string, message: OutgoingMessage): Promise<ComposedMessage> {
    return composeMessage(topic, message, {
      from: this.from,
      maxMessageBytes: this.maxMessageBytes,
    });
  }

  private groupCommit(topic: string): GroupCommit {
    let commit = this.commits.get(topic);
    if (commit === undefined) {
      commit = new GroupCommit((messages) => this.storeMessages(topic, messages, undefined));
      this.commits.set(topic, commit);
    }
    return commit;
  }

  /** Stores composed messages (or sends them through SMTP), leaving out duplicates. */
  private async storeMessages(
    topic: string,
    composed: ComposedMessage[],
    notBefore: Date | undefined,
  ): Promise<void> {
    const fresh = await this.withoutDuplicates(topic, composed);
    if (fresh.length > 0 && this.smtp) {
      await this.store.ensureTopic(topic);
      const groups = await this.store.listGroups(topic);
      await this.smtp.send(topic, groups, fresh);
    } else if (fresh.length > 0) {
      await this.store.append(topic, fresh, { notBefore });
    }
    this.logger.debug({ event: 'published', topic, count: fresh.length });
  }

  /**
   * Leaves out the messages whose caller-chosen id was published within the deduplication
   * window, and all but the first of one id within the batch.
   */
  private async withoutDuplicates(
    topic: string,
    composed: ComposedMessage[],
  ): Promise<ComposedMessage[]> {
    const chosen = composed.filter((message) => message.chosenId).map((message) => message.id);
    if (this.dedupWindowMs === 0 || chosen.length === 0) {
      return composed;
    }
    const seen = await this.store.storedIds(topic, [...new Set(chosen)], this.dedupWindowMs);
    return composed.filter((message) => {
      if (!message.chosenId) {
        return true;
      }
      if (seen.has(message.id)) {
        this.logger.info({ event: 'publish.duplicate', topic, id: message.id });
        return false;
      }
      seen.add(message.id);
      return true;
    });
  }

  /** Creates a consumer group: it receives every message published from now on. */
  async subscribe(topic: string, group: string): Promise<void> {
    this.assertOpen();
    checkName('topic', topic);
    checkName('group', group);
    // Only this group: a topic first made by a subscribe gets no default group it did not ask for.
    await this.store.subscribe(topic, group);
  }

  /** Starts a worker that runs `handler` for each message of the topic's group. */
  consume(topic: string, handler: Handler, options: ConsumeOptions = {}): Worker {
    this.assertOpen();
    const group = checkName('group', options.group ?? DEFAULT_GROUP);
    checkName('topic', topic);
    const concurrency = positiveInteger('concurrency', options.concurrency, 1);
    const consumer = checkName('group', options.consumer ?? newConsumerId());

    const claimer = this.groupToConsume(topic, group).then(() =>
      this.store.claimer(topic, group, { consumer }),
    );
    const worker = new Worker(this.store, claimer, handler, {
      topic,
      group,
      consumer,
      concurrency,
      prefetch: positiveInteger('prefetch', options.prefetch, concurrency),
      maxMessages:
        options.maxMessages === undefined
          ? undefined
          : positiveInteger('maxMessages', options.maxMessages, 1),
      idleTimeoutMs: options.idleTimeoutMs,
      maxAttempts: positiveInteger('maxAttempts', options.maxAttempts, DEFAULT_MAX_ATTEMPTS),
      graceMs: nonNegative('graceMs', options.graceMs, DEFAULT_GRACE_MS),
      leaseMs: positiveMs('leaseMs', options.leaseMs, DEFAULT_LEASE_MS),
      backoffMs: nonNegative('backoffMs', options.backoffMs, DEFAULT_BACKOFF_MS),
      maxBackoffMs: nonNegative('maxBackoffMs', options.maxBackoffMs, DEFAULT_MAX_BACKOFF_MS),
      handlerTimeoutMs: positiveMs(
        'handlerTimeoutMs',
        options.handlerTimeoutMs,
        DEFAULT_HANDLER_TIMEOUT_MS,
      ),
      archiveRetentionMs: nonNegative(
        'archiveRetentionMs',
        options.archiveRetentionMs,
        DEFAULT_ARCHIVE_RETENTION_MS,
      ),
      deadRetentionMs: nonNegative(
        'deadRetentionMs',
        options.deadRetentionMs,
        DEFAULT_DEAD_RETENTION_MS,
      ),
      topicRetentionMs: nonNegative(
        'topicRetentionMs',
        options.topicRetentionMs,
        DEFAULT_ARCHIVE_RETENTION_MS,
      ),
      logger: this.logger,
    });
    this.workers.add(worker);
    // The caller hears of a failed worker through `done`; this bookkeeping must not add an
    // unhandled rejection of its own.
    worker.done.finally(() => this.workers.delete(worker)).catch(() => undefined);
    return worker;
  }

  /** The dead letters of a group: list, show, replay and purge them. */
  deadLetters(topic: string, group: string = DEFAULT_GROUP): DeadLetters {
    this.assertOpen();
    return new DeadLetters(this.store, checkName('topic', topic), checkName('group', group));
  }

  /**
   * Checks that a worker has a group to consume. A topic that does not exist yet is created
   * with its default group (a consumer may start before the first publish); a group that does
   * not exist is an error, because creating it by a typo would keep copies nobody reads.
   */
  private async groupToConsume(topic: string, group: string): Promise<void> {
    const groups = await this.store.listGroups(topic);
    if (groups.includes(group)) {
      return;
    }
    if (groups.length === 0 && group === DEFAULT_GROUP) {
      await this.store.ensureTopic(topic);
      return;
    }
    const known = groups.length === 0 ? 'it has none yet' : `its groups: ${groups.join(', ')}`;
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `topic ${topic} has no group ${group} (${known}); create it with: ` +
        `mailbus subscribe ${topic} ${group}`,
    );
  }

  async topics(): Promise<string[]> {
    this.assertOpen();
    return this.store.listTopics();
  }

  async groups(topic: string): Promise<string[]> {
    this.assertOpen();
    return this.store.listGroups(checkName('topic', topic));
  }

  async stats(topic?: string): Promise<GroupStats[]> {
    this.assertOpen();
    if (
      topic !== undefined &&
      !(await this.store.listTopics()).includes(checkName('topic', topic))
    ) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        `no topic ${topic} in ${redact(this.store.location)}`,
      );
    }
    return this.store.stats(topic);
  }

  /** Stops every worker (handing back unstarted claims), then closes connections. */
  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    this.closed = true;
    await Promise.allSettled([...this.workers].map((worker) => worker.close()));
    await this.smtp?.close();
    await this.store.close();
  }

  private assertOpen(): void {
    if (this.closed) {
      throw new MailbusError(ERROR_CODES.CLOSED, 'this mailbus client is closed');
    }
  }
}

/** Connects to a queue: the Maildir at ./mailbus-data unless `url` says otherwise. */
export async function connect(options: ConnectOptions = {}): Promise<Mailbus> {
  const logger = options.logger ?? silentLogger;
  const config = parseStoreUrl(options.url, options);
  const maxMessageBytes = positiveInteger(
    'maxMessageBytes',
    options.maxMessageBytes,
    DEFAULT_MAX_MESSAGE_BYTES,
  );

  // The IMAP and SMTP clients load only when used: a Maildir command starts faster without them.
  const store: Store =
    config.kind === 'maildir'
      ? await MaildirStore.open(config, { logger })
      : await (await import('./store/imap/imap-store.js')).ImapStore.open(config, { logger });

  let smtp: SmtpPublisher | undefined;
  if (options.smtpUrl) {
    if (config.kind !== 'imap') {
      await store.close();
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        'publishing through SMTP needs an IMAP store (--url imap://...) to read the groups from',
      );
    }
    const address = options.address ?? (config.user.includes('@') ? config.user : undefined);
    if (!address) {
      await store.close();
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        'publishing through SMTP needs the queue account address (--address mailbus@example.org)',
      );
    }
    const { SmtpPublisher } = await import('./transport/smtp.js');
    smtp = new SmtpPublisher(parseSmtpUrl(options.smtpUrl, options), { address, logger });
  }

  logger.info({
    event: 'connected',
    store: config.kind,
    location: redact(store.location),
    smtp: options.smtpUrl ? redact(options.smtpUrl) : undefined,
  });
  const dedupWindowMs = nonNegative(
    'dedupWindowMs',
    options.dedupWindowMs,
    DEFAULT_DEDUP_WINDOW_MS,
  );
  if (dedupWindowMs > MAX_DEDUP_WINDOW_MS) {
    await store.close();
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `dedupWindowMs may be at most ${MAX_DEDUP_WINDOW_MS} (one day), not ${dedupWindowMs}`,
    );
  }
  return new Mailbus(store, {
    smtp,
    from: options.from ?? defaultFrom(),
    maxMessageBytes,
    dedupWindowMs,
    logger,
  });
}
