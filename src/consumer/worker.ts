// The consumer loop: claims a group's messages, runs the handler on each with bounded
// concurrency, acks what succeeded and puts back what failed. Claims are fetched in batches
// (one store round trip for many messages) into a small local buffer; a message in the buffer
// is claimed but not started, and goes back to the group untouched when the worker stops.
//
// Beside the loop run three timers: the heartbeat that keeps this worker's claims leased to it,
// the recovery that takes over the claims of workers that stopped heartbeating (each such
// delivery counts as a failed attempt, as SQS counts a receive), and the retention sweep that
// deletes handled messages and dead letters once they are old enough.

import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { ERROR_CODES, MailbusError, errorText } from '../errors.js';
import type { Logger } from '../log.js';
import { decodeMessage, derivedMessageId } from '../message/decode.js';
import { HEADER } from '../message/headers.js';
import type { Message } from '../message/message.js';
import { setHeaders } from '../message/rewrite.js';
import type { QuarantineReason, QuarantineVerdict } from '../security/quarantine.js';
import type { Verifier } from '../security/verify.js';
import type { Claim, Claimer, Store } from '../store/store.js';
import { AckBatch } from './ack-batch.js';
import { backoffMs } from './backoff.js';
import { composeDeadLetter } from './dead-letter.js';
import { DeadLetterError, HandlerTimeoutError, LeaseExpiredError, RetryError } from './errors.js';

/** What a handler may use besides the message. */
export interface HandlerContext {
  /** Aborts when the attempt's time limit passes or the worker stops waiting for it. */
  signal: AbortSignal;
}

export type Handler = (message: Message, context: HandlerContext) => unknown;

/** How long the loop waits for a store event before it looks again by itself. */
export const POLL_INTERVAL_MS = 1000;
/** Default number of attempts before a message is dead-lettered. */
export const DEFAULT_MAX_ATTEMPTS = 5;
/** Default time a stopping worker gives running handlers to finish. */
export const DEFAULT_GRACE_MS = 10_000;
/** Default lease (visibility timeout): how long a silent worker keeps its claims. */
export const DEFAULT_LEASE_MS = 30_000;
/** Default first retry delay; it doubles with each further attempt. */
export const DEFAULT_BACKOFF_MS = 1000;
/** Default longest retry delay. */
export const DEFAULT_MAX_BACKOFF_MS = 10 * 60_000;
/** Default time limit of one attempt. */
export const DEFAULT_HANDLER_TIMEOUT_MS = 5 * 60_000;
/** Default time handled messages stay in the archive (and in the topic's inbox). */
export const DEFAULT_ARCHIVE_RETENTION_MS = 7 * 86_400_000;
/** Default time dead letters are kept. */
export const DEFAULT_DEAD_RETENTION_MS = 30 * 86_400_000;
/** How often a worker deletes what retention no longer keeps; every second for retention 0. */
const RETENTION_SWEEP_MS = 60_000;
const RETENTION_ZERO_SWEEP_MS = 1000;
/** First pause after a failed claim (a dropped connection); doubles up to the maximum. */
const CLAIM_RETRY_MIN_MS = 200;
const CLAIM_RETRY_MAX_MS = 10_000;
/** The least time a stopping worker gives its last acks, even once its grace period is over. */
const ACK_FLUSH_MIN_MS = 1000;

export interface WorkerOptions {
  topic: string;
  group: string;
  consumer: string;
  /** Handlers running at once. */
  concurrency: number;
  /** Messages claimed ahead of free handler slots. */
  prefetch: number;
  /** Stop after this many messages were settled (handled, failed or dead-lettered). */
  maxMessages?: number;
  /** Stop once nothing has arrived for this long. */
  idleTimeoutMs?: number;
  /** Attempts before a failing message goes to the dead-letter mailbox. */
  maxAttempts: number;
  graceMs: number;
  /** How long this worker's claims stay its own without a heartbeat. */
  leaseMs: number;
  /** First retry delay, doubling after each further failure, up to maxBackoffMs. */
  backoffMs: number;
  maxBackoffMs: number;
  /** Time limit of one attempt. */
  handlerTimeoutMs: number;
  /** How long handled messages are kept; 0 deletes them at ack, Infinity keeps them. */
  archiveRetentionMs: number;
  /** How long dead letters are kept; Infinity keeps them. */
  deadRetentionMs: number;
  /** How long the topic's inbox keeps its copies; Infinity keeps them. */
  topicRetentionMs: number;
  /** Hand the handler only messages this verifier passes; quarantine the others. */
  verifier?: Verifier;
  /** Quarantine messages larger than this, without decoding them. */
  maxMessageBytes?: number;
  logger: Logger;
}

export type StopReason = 'closed' | 'max' | 'idle';

export interface WorkerSummary {
  /** Messages whose handler succeeded and that were acked. */
  handled: number;
  /** Attempts that failed and were put back for another try. */
  failed: number;
  /** Messages moved to the dead-letter mailbox. */
  deadLettered: number;
  /** Messages taken over from workers whose lease had expired. */
  recovered: number;
  /** Messages that failed verification and were moved to the group's quarantine. */
  quarantined: number;
  reason: StopReason;
}

export interface WorkerEvents {
  /** Non-fatal trouble: a claim or ack that failed; the worker carries on. */
  warning: [error: Error];
  /** A message was settled. */
  settled: [message: Message | undefined, outcome: Outcome];
  /** A message was moved to the group's quarantine, for this reason (also a `settled`). */
  quarantined: [reason: QuarantineReason];
}

export type Outcome = 'acked' | 'failed' | 'dead' | 'quarantined';

export class Worker extends EventEmitter<WorkerEvents> {
  readonly id: string;
  /** Resolves when the worker has stopped, for whichever reason. */
  readonly done: Promise<WorkerSummary>;

  private readonly options: WorkerOptions;
  private readonly claimerReady: Promise<Claimer>;
  private readonly handler: Handler;
  private readonly logger: Logger;
  private readonly abort = new AbortController();
  // Settles when the worker is told to stop, so that no wait outlasts a close().
  private readonly stopped = new Promise<void>((resolve) => {
    this.abort.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  private readonly buffer: Claim[] = [];
  private readonly active = new Set<Promise<void>>();
  private acks: AckBatch | undefined;
  private stopReason: StopReason | undefined;
  private started = 0;
  private lastArrival = Date.now();
  // Whether a stop for being idle already looked for dead consumers' claims since the last
  // message arrived: a drain (`--wait`) ends only after one such look.
  private recoveredSinceArrival = false;
  private readonly summary: WorkerSummary = {
    handled: 0,
    failed: 0,
    deadLettered: 0,
    recovered: 0,
    quarantined: 0,
    reason: 'closed',
  };
  private readonly timers: NodeJS.Timeout[] = [];
  // The running attempts, aborted when a stopping worker's grace period runs out.
  private readonly attempts = new Set<AbortController>();

  constructor(
    private readonly store: Store,
    claimer: Promise<Claimer>,
    handler: Handler,
    options: WorkerOptions,
  ) {
    super();
    this.options = options;
    this.id = options.consumer;
    this.claimerReady = claimer;
    this.handler = handler;
    this.logger = options.logger.child({ sub: 'worker', worker: options.consumer });
    this.done = this.run();
    // The caller awaits `done` or `close()`; a rejection is reported there, not as unhandled.
    this.done.catch(() => undefined);
  }

  /** Stops claiming, lets running handlers finish, hands back what was not started. */
  close(): Promise<WorkerSummary> {
    this.stop('closed');
    return this.done;
  }

  private stop(reason: StopReason): void {
    if (this.stopReason === undefined) {
      this.stopReason = reason;
      this.abort.abort();
    }
  }

  private async run(): Promise<WorkerSummary> {
    const claimer = await this.claimerReady;
    this.acks = new AckBatch((claims) => claimer.ack(claims));
    this.logger.info({ event: 'worker.started', topic: this.options.topic });

    try {
      await claimer.heartbeat();
      this.startTimers(claimer);
      await this.loop(claimer);
    } finally {
      await this.shutdown(claimer);
    }
    this.summary.reason = this.stopReason ?? 'closed';
    this.logger.info({ event: 'worker.stopped', ...this.summary });
    return { ...this.summary };
  }

  private async loop(claimer: Claimer): Promise<void> {
    const { concurrency, prefetch } = this.options;
    let retryMs = CLAIM_RETRY_MIN_MS;

    while (this.stopReason === undefined) {
      const wanted = Math.min(prefetch + concurrency - this.active.size, this.budget());
      if (this.buffer.length === 0 && wanted > 0) {
        try {
          const claims = await claimer.claim(wanted);
          retryMs = CLAIM_RETRY_MIN_MS;
          if (claims.length > 0) {
            this.lastArrival = Date.now();
            this.recoveredSinceArrival = false;
            this.buffer.push(...claims);
          }
        } catch (err) {
          this.warn(err, 'claim');
          await this.pause(retryMs);
          retryMs = Math.min(retryMs * 2, CLAIM_RETRY_MAX_MS);
          continue;
        }
      }

      while (this.buffer.length > 0 && this.active.size < concurrency && this.budget() > 0) {
        this.startHandler(claimer, this.buffer.shift() as Claim);
      }

      if (this.stopReason !== undefined) {
        break;
      }
      if (this.maxReached()) {
        await Promise.race([Promise.all(this.active), this.stopped]);
        this.stop('max');
        break;
      }
      if (this.active.size >= concurrency || (this.buffer.length > 0 && this.active.size > 0)) {
        await Promise.race([...this.active, this.stopped]);
        continue;
      }
      if (this.buffer.length === 0) {
        await this.idle(claimer);
      }
    }
  }

  /** How many more messages this worker may start, given maxMessages. */
  private budget(): number {
    const { maxMessages } = this.options;
    return maxMessages === undefined ? Infinity : maxMessages - this.started;
  }

  private maxReached(): boolean {
    return this.options.maxMessages !== undefined && this.started >= this.options.maxMessages;
  }

  /** Nothing to do: wait for new messages, a finished handler, or the idle timeout. */
  private async idle(claimer: Claimer): Promise<void> {
    const { idleTimeoutMs } = this.options;
    let waitMs = POLL_INTERVAL_MS;
    if (idleTimeoutMs !== undefined && this.active.size === 0) {
      const left = this.lastArrival + idleTimeoutMs - Date.now();
      if (left <= 0 && !this.recoveredSinceArrival) {
        // Recovery runs every half lease, which a short idle timeout would never reach: the
        // claims of consumers that died are looked for once more before stopping.
        this.recoveredSinceArrival = true;
        const recovered = this.summary.recovered;
        await this.recover(claimer).catch((err) => this.warn(err, 'recover'));
        if (this.summary.recovered > recovered) {
          this.lastArrival = Date.now();
        }
        return;
      }
      if (left <= 0) {
        this.stop('idle');
        return;
      }
      waitMs = Math.min(waitMs, left);
    }
    const arrival = claimer.waitForMessages(waitMs, this.abort.signal);
    await Promise.race([arrival, ...this.active, this.stopped]);
  }

  private startTimers(claimer: Claimer): void {
    const { leaseMs, archiveRetentionMs } = this.options;
    const every = (ms: number, task: () => Promise<void>, action: string): void => {
      let running = false;
      const timer = setInterval(() => {
        if (running || this.stopReason !== undefined) {
          return;
        }
        running = true;
        task()
          .catch((err) => this.warn(err, action))
          .finally(() => (running = false));
      }, ms);
      timer.unref();
      this.timers.push(timer);
    };

    every(leaseMs / 3, () => claimer.heartbeat(), 'heartbeat');
    every(leaseMs / 2, () => this.recover(claimer), 'recover');
    const sweepMs = archiveRetentionMs === 0 ? RETENTION_ZERO_SWEEP_MS : RETENTION_SWEEP_MS;
    every(sweepMs, () => this.sweep(), 'retention');
    void this.sweep().catch((err) => this.warn(err, 'retention'));
  }

  /** Takes over the claims of workers that stopped heartbeating; each counts as an attempt. */
  private async recover(claimer: Claimer): Promise<void> {
    const claims = await claimer.recover(this.options.leaseMs);
    for (const claim of claims) {
      this.summary.recovered += 1;
      const error = new LeaseExpiredError(
        `lease expired: the consumer holding it sent no heartbeat for ${this.options.leaseMs} ms`,
      );
      this.track(this.settleRecovered(claimer, claim, error));
    }
  }

  private async settleRecovered(claimer: Claimer, claim: Claim, error: Error): Promise<void> {
    const message = await this.decode(claimer, claim, true);
    if (message !== undefined) {
      await this.fail(claimer, claim, message, error);
    }
  }

  /** Counts a task as running until it settles. */
  private track(task: Promise<void>): void {
    const tracked = task.finally(() => {
      this.active.delete(tracked);
    });
    this.active.add(tracked);
  }

  /**
   * Verifies and decodes a claimed message. One that fails verification, is over the size
   * limit or cannot be decoded will never succeed: it goes to the quarantine with the reason,
   * and this resolves with undefined.
   */
  private async decode(
    claimer: Claimer,
    claim: Claim,
    recovered = false,
  ): Promise<Message | undefined> {
    const { topic, group, maxMessageBytes } = this.options;
    // The store told the size before reading: an oversized claim holds only part of its header.
    if (claim.oversized || (maxMessageBytes !== undefined && claim.size > maxMessageBytes)) {
      const limit = maxMessageBytes === undefined ? '' : `; the limit is ${maxMessageBytes}`;
      const detail = `the message is ${claim.size} bytes${limit}`;
      await this.quarantine(claimer, claim, { reason: 'too-large', detail });
      return undefined;
    }
    const verdict = await this.options.verifier?.check(claim.raw, { recovered });
    if (verdict !== undefined) {
      await this.quarantine(claimer, claim, verdict);
      return undefined;
    }
    try {
      return await decodeMessage(claim.raw, { topic, group });
    } catch (err) {
      await this.quarantine(claimer, claim, { reason: 'malformed', detail: errorText(err) });
      return undefined;
    }
  }

  /** Moves a message that may not reach the handler to the quarantine, with the reason. */
  private async quarantine(claimer: Claimer, claim: Claim, verdict: QuarantineVerdict) {
    try {
      await claimer.quarantine(claim, verdict);
      this.summary.quarantined += 1;
      this.logger.warn({
        event: 'message.quarantined',
        id: claim.oversized ? undefined : derivedMessageId(claim.raw),
        reason: verdict.reason,
        detail: verdict.detail,
      });
      this.emit('quarantined', verdict.reason);
      this.settle(undefined, 'quarantined');
    } catch (err) {
      this.warn(err, 'quarantine');
    }
  }

  /** Deletes handled messages and dead letters that retention no longer keeps. */
  private async sweep(): Promise<void> {
    const { topic, group, archiveRetentionMs, deadRetentionMs, topicRetentionMs } = this.options;
    const now = Date.now();
    if (Number.isFinite(archiveRetentionMs)) {
      const before = new Date(now - archiveRetentionMs);
      await this.store.purge({ topic, group, folder: 'archive' }, before);
    }
    // The topic's inbox is the record of the topic, shared by its groups: it keeps to its own
    // retention, not to the archive retention of whichever group sweeps it.
    if (Number.isFinite(topicRetentionMs)) {
      await this.store.purge({ topic, group, folder: 'topic' }, new Date(now - topicRetentionMs));
    }
    if (Number.isFinite(deadRetentionMs)) {
      await this.store.purge({ topic, group, folder: 'junk' }, new Date(now - deadRetentionMs));
    }
  }

  private startHandler(claimer: Claimer, claim: Claim): void {
    this.started += 1;
    this.track(this.handle(claimer, claim));
  }

  private async handle(claimer: Claimer, claim: Claim): Promise<void> {
    const message = await this.decode(claimer, claim);
    if (message === undefined) {
      return;
    }

    try {
      await this.runHandler(message);
    } catch (err) {
      if (err instanceof DeadLetterError) {
        await this.deadLetter(claimer, claim, message, err);
      } else {
        await this.fail(claimer, claim, message, err);
      }
      return;
    }

    try {
      await this.acks?.add(claim);
      this.summary.handled += 1;
      this.settle(message, 'acked');
    } catch (err) {
      this.warn(err, 'ack');
    }
  }

  /** Runs the handler under its time limit; a handler past it is abandoned, its attempt failed. */
  private async runHandler(message: Message): Promise<void> {
    const { handlerTimeoutMs } = this.options;
    const attempt = new AbortController();
    this.attempts.add(attempt);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new HandlerTimeoutError(`handler timed out after ${handlerTimeoutMs} ms`);
        attempt.abort(error);
        reject(error);
      }, handlerTimeoutMs);
    });
    try {
      await Promise.race([
        Promise.resolve().then(() => this.handler(message, { signal: attempt.signal })),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
      this.attempts.delete(attempt);
    }
  }

  private async fail(claimer: Claimer, claim: Claim, message: Message, err: unknown) {
    this.logger.info({
      event: 'message.failed',
      id: message.id,
      attempt: message.attempt,
      err: errorText(err),
    });
    if (message.attempt >= this.options.maxAttempts) {
      await this.deadLetter(claimer, claim, message, err);
      return;
    }
    const retry = setHeaders(claim.raw, {
      [HEADER.attempts]: String(message.attempt),
      [HEADER.lastError]: errorText(err),
      ...missingMessageId(message),
    });
    // A verified message keeps its signature, whose time will be old by the next attempt: the
    // seal says that this consumer already accepted it.
    const raw = this.options.verifier ? this.options.verifier.seal(retry) : retry;
    const { backoffMs: firstMs, maxBackoffMs } = this.options;
    const delayMs =
      err instanceof RetryError ? err.delayMs : backoffMs(message.attempt, firstMs, maxBackoffMs);
    try {
      await claimer.release(claim, { raw, notBefore: new Date(Date.now() + delayMs) });
      this.summary.failed += 1;
      this.settle(message, 'failed');
    } catch (releaseErr) {
      this.warn(releaseErr, 'release');
    }
  }

  private async deadLetter(
    claimer: Claimer,
    claim: Claim,
    message: Message | undefined,
    err: unknown,
  ): Promise<void> {
    const { topic, group, consumer } = this.options;
    const raw = await composeDeadLetter({
      topic,
      group,
      consumer,
      message,
      id: message?.id ?? derivedMessageId(claim.raw),
      attempts: message?.attempt ?? 1,
      error: errorText(err),
      // A verified message is sealed, so that a replay from the dead letters is accepted.
      original:
        this.options.verifier && message ? this.options.verifier.seal(claim.raw) : claim.raw,
    });
    try {
      await claimer.deadLetter(claim, raw);
      this.summary.deadLettered += 1;
      this.logger.warn({ event: 'message.dead', id: message?.id, err: errorText(err) });
      this.settle(message, 'dead');
    } catch (storeErr) {
      this.warn(storeErr, 'dead-letter');
    }
  }

  private settle(message: Message | undefined, outcome: Outcome): void {
    this.emit('settled', message, outcome);
  }

  /** Says so when the group's pause mark appears or goes: a paused worker claims nothing. */
  pausedChanged(paused: boolean): void {
    const { topic, group } = this.options;
    this.logger.info({ event: paused ? 'worker.paused' : 'worker.resumed', topic, group });
    if (paused) {
      const message =
        `group "${group}" of topic "${topic}" is paused: nothing is claimed until it is ` +
        'resumed (in the dashboard, or with resume() in the library)';
      this.emit('warning', new MailbusError(ERROR_CODES.PAUSED, message));
    }
  }

  private warn(err: unknown, action: string): void {
    const error =
      err instanceof Error
        ? err
        : new MailbusError(ERROR_CODES.STORAGE, `${action} failed: ${errorText(err)}`);
    this.logger.warn({ event: `${action}.failed`, err: error.message });
    this.emit('warning', error);
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.abort.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * The ordered cleanup: hand back, wait for handlers, flush acks, close the claimer. Handing
   * back and the handlers share the grace period; the last acks get what is left of it, and at
   * least ACK_FLUSH_MIN_MS. A store that cannot be reached (a settle waiting to be tried again
   * after a lost connection) must not hold a stopping worker: what is not settled by then stays
   * claimed until the lease expires, and is handled again.
   */
  private async shutdown(claimer: Claimer): Promise<void> {
    const graceEndsAt = Date.now() + this.options.graceMs;
    const grace = sleep(this.options.graceMs, 'timeout' as const, { ref: false });
    for (const timer of this.timers.splice(0)) {
      clearInterval(timer);
    }
    const handBack = async (): Promise<'done'> => {
      for (const claim of this.buffer.splice(0)) {
        try {
          await claimer.release(claim);
        } catch (err) {
          this.warn(err, 'release');
        }
      }
      return 'done';
    };
    if ((await Promise.race([handBack(), grace])) === 'timeout') {
      this.logger.warn({ event: 'worker.hand_back_expired' });
    }

    const finished = await Promise.race([Promise.all(this.active).then(() => 'done'), grace]);
    if (finished === 'timeout') {
      // What still runs is abandoned: its messages stay claimed until this worker's lease
      // expires and another worker recovers them. --exec commands are killed.
      this.logger.warn({ event: 'worker.grace_expired', running: this.active.size });
      for (const attempt of this.attempts) {
        attempt.abort(new HandlerTimeoutError('the worker stopped before the handler finished'));
      }
    }

    const flushed = (this.acks?.flush() ?? Promise.resolve()).then(
      () => 'done' as const,
      (err: unknown) => {
        this.warn(err, 'ack');
        return 'done' as const;
      },
    );
    const flushMs = Math.max(graceEndsAt - Date.now(), ACK_FLUSH_MIN_MS);
    const flushTimeout = sleep(flushMs, 'timeout' as const, { ref: false });
    if ((await Promise.race([flushed, flushTimeout])) === 'timeout') {
      this.logger.warn({ event: 'worker.ack_flush_expired', waitedMs: flushMs });
    }
    await claimer.close();
  }
}

// A message that came without a Message-ID keeps its derived id on the way round.
function missingMessageId(message: Message): Record<string, string> {
  return message.headers['message-id'] === undefined ? { 'Message-ID': `<${message.id}>` } : {};
}
