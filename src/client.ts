// The public entry point: connect to a queue, publish, consume, look at it, close it.

import { EventEmitter } from 'node:events';
import { parseSmtpUrl, parseStoreUrl, redact } from './config/connection.js';
import type { SecretSources } from './config/connection.js';
import { newConsumerId } from './consumer/consumer-id.js';
import { pausable } from './consumer/pause.js';
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
import { Quarantine } from './admin/quarantine.js';
import { DEFAULT_SIGNATURE_WINDOW_MS, parseKey, parseKeyList } from './security/signature.js';
import type { SigningKey } from './security/signature.js';
import { Verifier } from './security/verify.js';
import { checkDkimPolicy } from './security/dkim.js';
import type { DkimPolicy } from './security/dkim.js';
import { DEFAULT_GROUP } from './store/layout.js';
import { GroupCommit } from './store/group-commit.js';
import { MaildirStore } from './store/maildir/maildir-store.js';
import { MAX_DEDUP_WINDOW_MS } from './store/store.js';
import type { GroupStats, Store, SubscribeResult } from './store/store.js';
import type { DkimKey, SmtpPublisher } from './transport/smtp.js';

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
  /** Sign every published message with this key: `{ id, secret }` or `'id:secret'`. */
  signingKey?: SigningKey | string;
  /**
   * The keys a verifying consumer accepts signatures of (`consume(..., { verify: true })`), as
   * a list or `'id:secret,id:secret'`. Several at once let keys be rotated without downtime.
   */
  verifyKeys?: SigningKey[] | string;
  /** DKIM-sign what is published through SMTP with this key. */
  dkim?: DkimKey;
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

export interface SubscribeOptions {
  /**
   * Where a new group starts: `'now'` (the default) receives what is published from now on;
   * `'earliest'` first receives every message the topic's inbox still holds, and a Date those
   * stored at or after it, in publish order.
   */
  from?: StartPoint;
  /** Told how far the backfill has come: `done` of `total` topic messages looked at. */
  onProgress?: (done: number, total: number) => void;
}

export type StartPoint = 'now' | 'earliest' | Date;

export type { SubscribeResult };

/** The time a subscribe backfills from; undefined for `now`. */
function startOf(from: StartPoint | undefined): Date | undefined {
  if (from === undefined || from === 'now') {
    return undefined;
  }
  if (from === 'earliest') {
    return new Date(0);
  }
  if (from instanceof Date && Number.isFinite(from.getTime())) {
    return from;
  }
  throw new MailbusError(
    ERROR_CODES.INVALID_OPTION,
    `from must be 'now', 'earliest' or a valid Date, not ${JSON.stringify(from) ?? String(from)}`,
  );
}

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
  /**
   * Hand the handler only messages signed with one of the client's `verifyKeys`, signed within
   * `signatureWindowMs` and not seen before within it; quarantine the others.
   */
  verify?: boolean;
  /** How old (or how far ahead) a signature may be, and the replay window (default 5 min). */
  signatureWindowMs?: number;
  /**
   * Hand the handler only messages with a valid DKIM signature of one of these domains;
   * quarantine the others. With `verify` too, a message must pass both.
   */
  requireDkim?: DkimPolicy;
}

export type { Handler, WorkerSummary };

/** What a client reports as it works: the metrics (src/metrics/) listen to these. */
export interface MailbusEvents {
  /** Messages of a topic were stored, or accepted by the SMTP server. */
  published: [topic: string, count: number];
  /** A worker was started for a group. */
  worker: [worker: Worker, topic: string, group: string];
  /** One run of a handler ended, after `seconds`; `succeeded` when it returned. */
  attempt: [topic: string, group: string, seconds: number, succeeded: boolean];
}

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
    const due = new Date(Date.now() + nonNegative('delayMs', delayMs, 0));
    if (Number.isNaN(due.getTime())) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        `delayMs ${String(delayMs)} puts the message past the last date a clock can show`,
      );
    }
    return due;
  }
  return undefined;
}

/** The longest a timer can wait in Node.js (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A duration that a timer waits out: at most MAX_TIMER_MS, which Node.js would cut to 1 ms. */
function timerMs(name: string, resolved: number): number {
  if (resolved > MAX_TIMER_MS) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `${name} may be at most ${MAX_TIMER_MS} ms (about 24 days), not ${String(resolved)}`,
    );
  }
  return resolved;
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

/**
 * How long dead letters are kept: more than zero. A dead letter is there for a person to read
 * and replay; deleting them at once would drop failed messages without a trace.
 */
function deadRetention(value: number | undefined): number {
  const resolved = nonNegative('deadRetentionMs', value, DEFAULT_DEAD_RETENTION_MS);
  if (resolved === 0) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      'deadRetentionMs (--dead-retention) must be more than 0: dead letters are kept for ' +
        'someone to read; remove them with dlq purge',
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

export class Mailbus extends EventEmitter<MailbusEvents> {
  readonly store: Store;
  private readonly smtp: SmtpPublisher | undefined;
  private readonly from: string;
  private readonly maxMessageBytes: number;
  private readonly dedupWindowMs: number;
  private readonly signingKey: SigningKey | undefined;
  private readonly verifyKeys: SigningKey[];
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
      signingKey?: SigningKey;
      verifyKeys: SigningKey[];
      logger: Logger;
    },
  ) {
    super();
    this.store = store;
    this.dedupWindowMs = options.dedupWindowMs;
    this.smtp = options.smtp;
    this.from = options.from;
    this.maxMessageBytes = options.maxMessageBytes;
    this.signingKey = options.signingKey;
    this.verifyKeys = options.verifyKeys;
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
      signingKey: this.signingKey,
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
    if (fresh.length > 0) {
      this.emit('published', topic, fresh.length);
    }
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

  /**
   * Creates a consumer group: it receives every message published from now on. With `from`
   * (`'earliest'` or a Date) the group must be new, and it starts with a copy of every message
   * of the topic's inbox stored at or after that time, as far back as retention keeps them.
   */
  async subscribe(
    topic: string,
    group: string,
    options: SubscribeOptions = {},
  ): Promise<SubscribeResult> {
    this.assertOpen();
    checkName('topic', topic);
    checkName('group', group);
    const from = startOf(options.from);
    // Only this group: a topic first made by a subscribe gets no default group it did not ask for.
    return await this.store.subscribe(
      topic,
      group,
      from === undefined ? {} : { from, onProgress: options.onProgress },
    );
  }

  /** Starts a worker that runs `handler` for each message of the topic's group. */
  consume(topic: string, handler: Handler, options: ConsumeOptions = {}): Worker {
    this.assertOpen();
    const group = checkName('group', options.group ?? DEFAULT_GROUP);
    checkName('topic', topic);
    const concurrency = positiveInteger('concurrency', options.concurrency, 1);
    const consumer = checkName('group', options.consumer ?? newConsumerId());
    const verifier =
      options.verify || options.requireDkim ? this.verifier(topic, group, options) : undefined;

    // The claimer honours the group's pause mark (src/consumer/pause.ts).
    const claimer = this.groupToConsume(topic, group)
      .then(() =>
        this.store.claimer(topic, group, { consumer, maxMessageBytes: this.maxMessageBytes }),
      )
      .then((claimer) =>
        pausable(
          claimer,
          () => this.store.isPaused(topic, group),
          (paused) => worker.pausedChanged(paused),
        ),
      );
    const worker = new Worker(this.store, claimer, this.timed(topic, group, handler), {
      topic,
      group,
      consumer,
      concurrency,
      prefetch: positiveInteger('prefetch', options.prefetch, concurrency),
      maxMessages:
        options.maxMessages === undefined
          ? undefined
          : positiveInteger('maxMessages', options.maxMessages, 1),
      idleTimeoutMs:
        options.idleTimeoutMs === undefined
          ? undefined
          : timerMs('idleTimeoutMs', nonNegative('idleTimeoutMs', options.idleTimeoutMs, 0)),
      maxAttempts: positiveInteger('maxAttempts', options.maxAttempts, DEFAULT_MAX_ATTEMPTS),
      graceMs: timerMs('graceMs', nonNegative('graceMs', options.graceMs, DEFAULT_GRACE_MS)),
      leaseMs: timerMs('leaseMs', positiveMs('leaseMs', options.leaseMs, DEFAULT_LEASE_MS)),
      backoffMs: nonNegative('backoffMs', options.backoffMs, DEFAULT_BACKOFF_MS),
      maxBackoffMs: nonNegative('maxBackoffMs', options.maxBackoffMs, DEFAULT_MAX_BACKOFF_MS),
      handlerTimeoutMs: timerMs(
        'handlerTimeoutMs',
        positiveMs('handlerTimeoutMs', options.handlerTimeoutMs, DEFAULT_HANDLER_TIMEOUT_MS),
      ),
      archiveRetentionMs: nonNegative(
        'archiveRetentionMs',
        options.archiveRetentionMs,
        DEFAULT_ARCHIVE_RETENTION_MS,
      ),
      deadRetentionMs: deadRetention(options.deadRetentionMs),
      topicRetentionMs: nonNegative(
        'topicRetentionMs',
        options.topicRetentionMs,
        DEFAULT_ARCHIVE_RETENTION_MS,
      ),
      verifier,
      maxMessageBytes: this.maxMessageBytes,
      logger: this.logger,
    });
    this.workers.add(worker);
    this.emit('worker', worker, topic, group);
    // The caller hears of a failed worker through `done`; this bookkeeping must not add an
    // unhandled rejection of its own.
    worker.done.finally(() => this.workers.delete(worker)).catch(() => undefined);
    return worker;
  }

  /** The handler, reporting how long each run took. */
  private timed(topic: string, group: string, handler: Handler): Handler {
    return async (message, context) => {
      const started = performance.now();
      let succeeded = false;
      try {
        const result = await handler(message, context);
        succeeded = true;
        return result;
      } finally {
        this.emit('attempt', topic, group, (performance.now() - started) / 1000, succeeded);
      }
    };
  }

  /** Pauses a group: its consumers claim nothing until resume(). */
  async pause(topic: string, group: string): Promise<void> {
    this.assertOpen();
    await this.store.setPaused(checkName('topic', topic), checkName('group', group), true);
  }

  async resume(topic: string, group: string): Promise<void> {
    this.assertOpen();
    await this.store.setPaused(checkName('topic', topic), checkName('group', group), false);
  }

  /** The dead letters of a group: list, show, replay and purge them. */
  deadLetters(topic: string, group: string = DEFAULT_GROUP): DeadLetters {
    this.assertOpen();
    return new DeadLetters(this.store, checkName('topic', topic), checkName('group', group));
  }

  /**
   * The quarantine of a group: list, show and release what failed verification. When the
   * client has verification keys, a released message is sealed with the first, so that
   * verifying consumers hand it to their handler; without keys it is checked again.
   */
  quarantine(topic: string, group: string = DEFAULT_GROUP): Quarantine {
    this.assertOpen();
    checkName('topic', topic);
    checkName('group', group);
    const keys = this.verifyKeys;
    const stamp =
      keys.length === 0
        ? undefined
        : (raw: Buffer) => this.verifier(topic, group, { verify: true }).seal(raw);
    return new Quarantine(this.store, topic, group, stamp);
  }

  private verifier(topic: string, group: string, options: ConsumeOptions): Verifier {
    if (options.verify && this.verifyKeys.length === 0) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        'verifying needs keys: give verifyKeys to connect() (MAILBUS_VERIFY_KEYS)',
      );
    }
    const windowMs = positiveMs(
      'signatureWindowMs',
      options.signatureWindowMs,
      DEFAULT_SIGNATURE_WINDOW_MS,
    );
    if (windowMs < 1000) {
      // Signature times are whole seconds: a shorter window would refuse fresh messages.
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        `signatureWindowMs must be at least 1000, not ${windowMs}`,
      );
    }
    return new Verifier({
      topic,
      group,
      keys: options.verify ? this.verifyKeys : [],
      dkim: options.requireDkim && checkDkimPolicy(options.requireDkim),
      windowMs,
      replayGuard: (id, windowMs) => this.store.acceptId(topic, group, id, windowMs),
    });
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
  const signingKey =
    typeof options.signingKey === 'string'
      ? parseKey(options.signingKey, 'signingKey')
      : options.signingKey;
  const verifyKeys =
    typeof options.verifyKeys === 'string'
      ? parseKeyList(options.verifyKeys, 'verifyKeys')
      : (options.verifyKeys ?? []);
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
    smtp = new SmtpPublisher(parseSmtpUrl(options.smtpUrl, options), {
      address,
      dkim: options.dkim,
      logger,
    });
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
    signingKey,
    verifyKeys,
    logger,
  });
}
