// The contract between the queue and where its messages live, written in queue terms. The
// Maildir store and the IMAP store implement it; the client, the consumer loop and the CLI
// only ever talk to this interface.

import { ERROR_CODES, MailbusError } from '../errors.js';
import type { ComposedMessage } from '../message/compose.js';
import type { QuarantineVerdict } from '../security/quarantine.js';

export interface Store {
  readonly kind: 'maildir' | 'imap';
  /** Where the queue is, safe to print: a path or a URL without its password. */
  readonly location: string;

  /** Creates the topic and its default group if they do not exist yet. */
  ensureTopic(topic: string): Promise<void>;
  /**
   * Creates a consumer group; it receives every message published from now on. With
   * `options.from` the group must be new, and it first receives a copy of every message of the
   * topic's inbox stored at or after that time, in publish order (see SubscribeOptions).
   * Without it, subscribing a group that exists changes nothing.
   */
  subscribe(topic: string, group: string, options?: SubscribeOptions): Promise<SubscribeResult>;
  listTopics(): Promise<string[]>;
  listGroups(topic: string): Promise<string[]>;

  /**
   * Stores messages of one topic: one copy in the topic's inbox and one in every group's.
   * Resolves only once all of them are durable, as the store defines it. With `notBefore` in the
   * future the groups' copies go to their Scheduled mailboxes and are handed out from then on.
   */
  append(topic: string, messages: ComposedMessage[], options?: AppendOptions): Promise<void>;

  /**
   * Of these caller-chosen message ids, those that a publish stored in the topic within the
   * last `windowMs`: a deduplicating publish skips them.
   */
  storedIds(topic: string, ids: string[], windowMs: number): Promise<Set<string>>;

  /**
   * Records that a verifying consumer of the group accepted the message `id` now; resolves with
   * whether it had already been accepted within the last `windowMs` (a replay).
   */
  acceptId(topic: string, group: string, id: string, windowMs: number): Promise<boolean>;

  /** A claimer hands out a group's messages to one consumer. */
  claimer(topic: string, group: string, options: ClaimerOptions): Promise<Claimer>;

  stats(topic?: string): Promise<GroupStats[]>;

  /** The messages of one folder of a group (or of the topic's inbox), oldest first. */
  list(place: Place, options?: ListOptions): Promise<StoredMessage[]>;

  /** Deletes messages of a folder by ref; returns how many were deleted. */
  remove(place: Place, refs: string[]): Promise<number>;

  /** Deletes the messages of a folder stored before `before`; returns how many. */
  purge(place: Place, before: Date): Promise<number>;

  /** Delivers a message text into a group's waiting messages (a replay, a release by hand). */
  restore(topic: string, group: string, raw: Buffer): Promise<void>;

  /**
   * The messages that match a query, newest first, one page at a time, with how many match in
   * all. The IMAP store asks the server (SEARCH); the Maildir store reads the files.
   */
  search(query: SearchQuery, page?: PageOptions): Promise<SearchPage>;

  /**
   * Pauses a group (or resumes it): the consumers of a paused group claim nothing until it is
   * resumed. The mark is a mailbox of its own, `<group>.Paused`, which a mail client shows.
   */
  setPaused(topic: string, group: string, paused: boolean): Promise<void>;
  isPaused(topic: string, group: string): Promise<boolean>;

  /** Closes connections and watchers. Safe to call twice. */
  close(): Promise<void>;
}

/** The longest deduplication window a store must honour in storedIds(). */
export const MAX_DEDUP_WINDOW_MS = 86_400_000;

export interface SubscribeOptions {
  /**
   * Backfill the new group from the topic's inbox: every message stored there at or after this
   * time (`new Date(0)` for all that retention kept), byte for byte, with its priority flag.
   * No message published while the subscribe runs is missed by the group or given to it twice.
   */
  from?: Date;
  /**
   * Told how far a backfill has come: `done` of the `total` topic messages it looks at. Called
   * once the total is known, then as it goes, and at the end with `done` equal to `total`.
   */
  onProgress?: BackfillProgress;
}

export type BackfillProgress = (done: number, total: number) => void;

export interface SubscribeResult {
  /** How many messages of the topic's inbox the group was given by the backfill. */
  backfilled: number;
}

export interface AppendOptions {
  /** Hand the message out no earlier than this. */
  notBefore?: Date;
}

export interface ClaimerOptions {
  /**
   * Names this consumer's in-progress mailbox: a valid group-name-like token, unique among the
   * live consumers of the group.
   */
  consumer: string;
  /**
   * Messages larger than this are claimed without being read: the claim carries their size and
   * at most a bounded part of their header, and the only way to settle it is quarantine().
   */
  maxMessageBytes?: number;
}

/** The folders of a group that hold messages, and the topic's own inbox. */
export type Folder =
  'waiting' | 'scheduled' | 'in-flight' | 'archive' | 'junk' | 'quarantine' | 'topic';

/** A folder of one group; for `topic`, the group is ignored. */
export interface Place {
  topic: string;
  group: string;
  folder: Folder;
}

export interface ListOptions {
  /** At most this many, the oldest first (default: all). */
  limit?: number;
}

/** The states a search looks in; each is one folder of a group (see Folder). */
export type MessageState = 'waiting' | 'scheduled' | 'in-flight' | 'handled' | 'dead';

/** The folder that holds the messages of a state. */
export const STATE_FOLDERS: Record<MessageState, Folder> = {
  waiting: 'waiting',
  scheduled: 'scheduled',
  'in-flight': 'in-flight',
  handled: 'archive',
  dead: 'junk',
};

/** What a search looks for; every field given must match (all of them: AND). */
export interface SearchQuery {
  /** Only this topic (default: every topic). */
  topic?: string;
  /** Only this group (default: every group of the topic). */
  group?: string;
  /** Only these states (default: all of them). */
  states?: MessageState[];
  /** The message id (its Message-ID without angle brackets). */
  id?: string;
  /** The ordering key (X-Mailbus-Key). */
  key?: string;
  /** A header field whose value contains this text, case-insensitively. */
  header?: { name: string; value: string };
  /** Text the body contains, case-insensitively: free text in the payload. */
  text?: string;
  /** Stored at or after this time. */
  since?: Date;
  /** Stored before this time. */
  before?: Date;
}

export interface PageOptions {
  /** How many matches to skip, the newest first (default 0). */
  offset?: number;
  /** Most matches returned (default 50, at most MAX_SEARCH_PAGE). */
  limit?: number;
}

/** The largest page a search returns. */
export const MAX_SEARCH_PAGE = 500;
export const DEFAULT_SEARCH_PAGE = 50;

export interface SearchHit extends StoredMessage {
  topic: string;
  group: string;
  state: MessageState;
}

export interface SearchPage {
  /** How many messages match in all. */
  total: number;
  /** This page of them, the newest first. */
  hits: SearchHit[];
}

/** A stored message as an operator sees it. */
export interface StoredMessage {
  /** Names the message within its folder, for remove(): a file name or a UID. */
  ref: string;
  /** Where it is, for people: the mailbox and file name or UID. */
  location: string;
  raw: Buffer;
  /** When it was stored in this folder (Maildir: the time in its file name; IMAP: INTERNALDATE). */
  storedAt: Date;
}

/** A message claimed by one consumer: only that consumer may settle it. */
export interface Claim {
  /** Where the claimed message lives now (a file path, or a mailbox and UID). */
  readonly location: string;
  /**
   * The message text. For an oversized claim, only a bounded part of its header (at most
   * MAX_HEADER_BYTES): enough for its Message-ID and ordering key, never the body.
   */
  readonly raw: Buffer;
  /** The stored message's size in bytes, as the store knows it before reading it. */
  readonly size: number;
  /** Larger than the claimer's maxMessageBytes: not read, to be quarantined as too large. */
  readonly oversized: boolean;
}

export interface ReleaseOptions {
  /** The message text to put back: the original with updated attempt and error fields. */
  raw?: Buffer;
  /** Hand it out again no earlier than this (a retry's backoff): it waits in Scheduled. */
  notBefore?: Date;
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

  /**
   * Moves a message that may not reach a handler to the group's quarantine mailbox: the
   * original with the verdict's reason and the time added at the top of its header. Nothing
   * that fails verification is deleted. An oversized claim is quarantined without its text
   * passing through the process (each store says how).
   */
  quarantine(claim: Claim, verdict: QuarantineVerdict): Promise<void>;

  /**
   * Records that this consumer is alive. Its claims stay its own for as long as its last
   * heartbeat is younger than the lease other consumers of the group apply in recover().
   */
  heartbeat(): Promise<void>;

  /**
   * Takes over the claims of consumers of the group whose last heartbeat is older than
   * `leaseMs`: each such claim is moved, exclusively, to this consumer and returned, for the
   * caller to count as a failed attempt. Resolves with none when every consumer is alive.
   */
  recover(leaseMs: number): Promise<Claim[]>;

  /** Stops watching and removes this consumer's empty in-progress mailbox. Safe to call twice. */
  close(): Promise<void>;
}

export interface GroupStats {
  topic: string;
  group: string;
  /** Messages no consumer has claimed yet. */
  waiting: number;
  /** Messages waiting for a later time: delayed publishes and retries in backoff. */
  scheduled: number;
  /** Messages claimed by a consumer and not yet settled. */
  inFlight: number;
  /** Messages handled and kept in the archive. */
  handled: number;
  /** Dead letters. */
  dead: number;
  /** Messages that failed verification, kept for an operator. */
  quarantined: number;
  /**
   * Consumers seen recently: those whose last heartbeat is younger than CONSUMERS_SEEN_MS. A
   * consumer that stops cleanly removes its trace and leaves the count at once; one that
   * crashed counts until its heartbeat is that old (or another consumer took its claims over).
   */
  consumers: number;
}

/** How recent a consumer's last heartbeat must be for stats() to count it (5 minutes). */
export const CONSUMERS_SEEN_MS = 5 * 60_000;

/** Backfilling is for a new group: one that exists has had its own copies since it was made. */
export function groupExists(topic: string, group: string): MailbusError {
  return new MailbusError(
    ERROR_CODES.INVALID_OPTION,
    `group ${group} of topic ${topic} exists already: a start point (from) is only for a new ` +
      'group, which it backfills from the topic; subscribe without one, or pick a new name',
  );
}
