// What the runner needs of each queue system, and where each one is. Every adapter (mailbus
// in four setups, BullMQ, RabbitMQ, pg-boss, NATS JetStream) implements QueueSystem; the
// Endpoints object is plain JSON so that consumer processes of the scaling runs can open the
// same system from it.

import type { SystemId } from '../options.js';
import type { Payload } from '../payload.js';

/** A handler that "just returns": the runner's only work is to note the arrival. */
export type BenchHandler = (payload: unknown) => void;

export interface ConsumeSettings {
  /** Handlers running at once in this consumer. */
  concurrency: number;
}

export interface RunningConsumer {
  /** Stops taking messages and waits until the consumer has shut down. */
  stop(): Promise<void>;
}

export interface QueueSystem {
  readonly id: SystemId;
  /** What "published" means for this system here, in one sentence. */
  readonly durability: string;
  /** Where its data lives (disk or tmpfs) and how that was found out. */
  readonly storage: string;
  /** Warnings the system's client reported (mailbus worker warnings, client errors). */
  readonly warnings: string[];

  /** Creates the queue (topic, stream, table) for one phase. */
  prepare(queue: string): Promise<void>;
  publish(queue: string, payload: Payload): Promise<void>;
  publishBatch(queue: string, payloads: Payload[]): Promise<void>;
  /**
   * Publishes a large backlog as fast as the system allows; only the consuming of it is
   * measured. Defaults to publishBatch; returns a note when it took a shortcut.
   */
  fillBacklog?(queue: string, payloads: Payload[]): Promise<void>;
  readonly fillNote?: string;
  /** How many messages are waiting to be consumed (SMTP delivers after publish resolves). */
  waiting(queue: string): Promise<number>;
  consume(
    queue: string,
    handler: BenchHandler,
    settings: ConsumeSettings,
  ): Promise<RunningConsumer>;
  /** Deletes what prepare() and the messages created. */
  remove(queue: string): Promise<void>;
  close(): Promise<void>;
}

/** Where everything is; plain JSON. */
export interface Endpoints {
  /** The benchmark's own Maildir (mailbus/maildir-*), and what kind of storage it is on. */
  maildirRoot: string;
  maildirStorage: string;
  /** The private Dovecot and Postfix, when they started. */
  mail?: {
    host: string;
    imapPort: number;
    smtpPort: number;
    user: string;
    password: string;
    caFile: string;
    domain: string;
    /** The account's mail root as Dovecot sees it, its format, and what storage that is. */
    maildir: string;
    format: 'maildir' | 'sdbox';
    storage: string;
    /** Postfix's queue directory's storage. */
    postfixStorage: string;
  };
  redisUrl: string;
  amqpUrl: string;
  postgresUrl: string;
  /** pg-boss's schema, made for the run and dropped after it. */
  pgBossSchema: string;
  natsUrl: string;
  /** Messages per batched fetch (pg-boss/fetch-100). */
  fetchBatchSize: number;
}

export interface OpenOptions {
  /** The runner's own connection: it deletes server-side leftovers (a schema) when it closes. */
  owner: boolean;
}

/** A system that cannot be measured here, and why. */
export class Unreachable extends Error {
  override readonly name = 'Unreachable';
}

export async function openSystem(
  id: SystemId,
  endpoints: Endpoints,
  options: OpenOptions,
): Promise<QueueSystem> {
  const [system] = id.split('/') as [string, string];
  switch (system) {
    case 'mailbus':
      return (await import('./mailbus.js')).openMailbus(id, endpoints);
    case 'bullmq':
      return (await import('./bullmq.js')).openBullmq(id, endpoints);
    case 'rabbitmq':
      return (await import('./rabbitmq.js')).openRabbitmq(id, endpoints);
    case 'pg-boss':
      return (await import('./pg-boss.js')).openPgBoss(id, endpoints, options);
    case 'nats':
      return (await import('./nats.js')).openNats(id, endpoints);
    default:
      throw new Error(`no adapter for ${id}`);
  }
}

/** The text of any thrown value, on one line. */
export function reason(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s+/g, ' ').trim();
}
