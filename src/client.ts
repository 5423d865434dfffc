// The public entry point: connect to a queue, publish, consume, look at it, close it.

import { parseSmtpUrl, parseStoreUrl, redact } from './config/connection.js';
import type { SecretSources } from './config/connection.js';
import { newConsumerId } from './consumer/consumer-id.js';
import { DEFAULT_GRACE_MS, DEFAULT_MAX_ATTEMPTS, Worker } from './consumer/worker.js';
import type { Handler, WorkerSummary } from './consumer/worker.js';
import { ERROR_CODES, MailbusError } from './errors.js';
import { silentLogger } from './log.js';
import type { Logger } from './log.js';
import { DEFAULT_MAX_MESSAGE_BYTES, composeMessage, defaultFrom } from './message/compose.js';
import type { ComposedMessage } from './message/compose.js';
import type { OutgoingMessage } from './message/message.js';
import { checkName } from './names.js';
import { DEFAULT_GROUP } from './store/layout.js';
import { MaildirStore } from './store/maildir/maildir-store.js';
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
  logger?: Logger;
}

export type PublishOptions = Omit<OutgoingMessage, 'payload'>;

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

export class Mailbus {
  readonly store: Store;
  private readonly smtp: SmtpPublisher | undefined;
  private readonly from: string;
  private readonly maxMessageBytes: number;
  private readonly logger: Logger;
  private readonly workers = new Set<Worker>();
  private closed = false;

  constructor(
    store: Store,
    options: { smtp?: SmtpPublisher; from: string; maxMessageBytes: number; logger: Logger },
  ) {
    this.store = store;
    this.smtp = options.smtp;
    this.from = options.from;
    this.maxMessageBytes = options.maxMessageBytes;
    this.logger = options.logger;
  }

  /** Publishes one message; resolves with its id once it is stored (or accepted by SMTP). */
  async publish(topic: string, payload: unknown, options: PublishOptions = {}): Promise<string> {
    const [id] = await this.publishBatch(topic, [{ ...options, payload }]);
    return id as string;
  }

  /** Publishes several messages of one topic in one store operation. */
  async publishBatch(topic: string, messages: OutgoingMessage[]): Promise<string[]> {
    this.assertOpen();
    checkName('topic', topic);
    const composed: ComposedMessage[] = [];
    for (const message of messages) {
      composed.push(
        await composeMessage(topic, message, {
          from: this.from,
          maxMessageBytes: this.maxMessageBytes,
        }),
      );
    }

    if (this.smtp) {
      await this.store.ensureTopic(topic);
      const groups = await this.store.listGroups(topic);
      await this.smtp.send(topic, groups, composed);
    } else {
      await this.store.append(topic, composed);
    }
    this.logger.debug({ event: 'published', topic, count: composed.length });
    return composed.map((message) => message.id);
  }

  /** Creates a consumer group: it receives every message published from now on. */
  async subscribe(topic: string, group: string): Promise<void> {
    this.assertOpen();
    checkName('topic', topic);
    checkName('group', group);
    await this.store.ensureTopic(topic);
    await this.store.subscribe(topic, group);
  }

  /** Starts a worker that runs `handler` for each message of the topic's group. */
  consume(topic: string, handler: Handler, options: ConsumeOptions = {}): Worker {
    this.assertOpen();
    const group = checkName('group', options.group ?? DEFAULT_GROUP);
    checkName('topic', topic);
    const concurrency = positiveInteger('concurrency', options.concurrency, 1);
    const consumer = checkName('group', options.consumer ?? newConsumerId());

    const worker = new Worker(this.store.claimer(topic, group, { consumer }), handler, {
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
      graceMs: options.graceMs ?? DEFAULT_GRACE_MS,
      logger: this.logger,
    });
    this.workers.add(worker);
    void worker.done.finally(() => this.workers.delete(worker));
    return worker;
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
    return this.store.stats(topic === undefined ? undefined : checkName('topic', topic));
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
  return new Mailbus(store, {
    smtp,
    from: options.from ?? defaultFrom(),
    maxMessageBytes,
    logger,
  });
}
