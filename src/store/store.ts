// The contract between the queue and where its messages live, written in queue terms. The
// Maildir store and the IMAP store implement it; the client, the consumer loop and the CLI
// only ever talk to this interface.

import type { ComposedMessage } from '../message/compose.js';

export interface Store {
  readonly kind: 'maildir' | 'imap';
  /** Where the queue is, safe to print: a path or a URL without its password. */
  readonly location: string;

  /** Creates the topic and its default group if they do not exist yet. */
  ensureTopic(topic: string): Promise<void>;
  /** Creates a consumer group; it receives every message published from now on. */
  subscribe(topic: string, group: string): Promise<void>;
  listTopics(): Promise<string[]>;
  listGroups(topic: string): Promise<string[]>;

  /**
   * Stores messages of one topic: one copy in the topic's inbox and one in every group's.
   * Resolves only once all of them are durable, as the store defines it.
   */
  append(topic: string, messages: ComposedMessage[]): Promise<void>;

  /** A claimer hands out a group's messages to one consumer. */
  claimer(topic: string, group: string, options: ClaimerOptions): Promise<Claimer>;

  stats(topic?: string): Promise<GroupStats[]>;

  /** Closes connections and watchers. Safe to call twice. */
  close(): Promise<void>;
}

export interface ClaimerOptions {
  /** Names this consumer's in-progress mailbox: a valid group-name-like token. */
  consumer: string;
}

/** A message claimed by one consumer: only that consumer may settle it. */
export interface Claim {
  /** Where the claimed message lives now (a file path, or a mailbox and UID). */
  readonly location: string;
  readonly raw: Buffer;
}

export interface ReleaseOptions {
  /** The message text to put back: the original with updated attempt and error fields. */
  raw?: Buffer;
}

export interface Claimer {
  /**
   * Claims up to `max` waiting messages for this consumer. Each is claimed exclusively: no other
   * consumer of the group is handed it while this one holds it. Resolves with none when the
   * group has nothing waiting.
   */
  claim(max: number): Promise<Claim[]>;

  /**
   * Resolves when new messages may be waiting, or after `timeoutMs`, or when `signal` aborts;
   * a hint, not a promise: the next claim may still find nothing.
   */
  waitForMessages(timeoutMs: number, signal: AbortSignal): Promise<void>;

  /**
   * Records messages as handled: they move to the group's archive, flagged \Seen. Settles every
   * claim it can; when some were no longer this consumer's, throws a LeaseLostError naming
   * them after settling the rest.
   */
  ack(claims: Claim[]): Promise<void>;

  /** Puts a message back to waiting, as `options.raw` when given (a rewritten copy). */
  release(claim: Claim, options?: ReleaseOptions): Promise<void>;

  /** Moves a message to the group's dead-letter mailbox, as `raw` (the failure report). */
  deadLetter(claim: Claim, raw: Buffer): Promise<void>;

  /** Stops watching and removes this consumer's empty in-progress mailbox. Safe to call twice. */
  close(): Promise<void>;
}

export interface GroupStats {
  topic: string;
  group: string;
  /** Messages no consumer has claimed yet. */
  waiting: number;
  /** Messages claimed by a consumer and not yet settled. */
  inFlight: number;
  /** Messages handled and kept in the archive. */
  handled: number;
  /** Dead letters. */
  dead: number;
}
