// What every fault scenario shares: its size (CI or full), a private directory with a ledger,
// where the queue is (a Maildir, or a Dovecot account read back from its Maildir on disk), a
// publisher that records what it was told is stored, and waiting for a run to drain.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from '../../src/index.js';
import type { ConnectOptions, Mailbus, OutgoingMessage } from '../../src/index.js';
import type { MailServersInfo } from '../servers/mail-servers.js';
import { keepEvidence } from './evidence.js';
import { Ledger, checkRun } from './ledger.js';
import type { CheckOptions, RunReport } from './ledger.js';
import { groupCounts, readGroupState } from './mailboxes.js';
import type { WorkerFleet } from './workers.js';

/** `npm run faults` sets FAULTS_FULL=1: every scenario at full size. */
export const FULL = process.env.FAULTS_FULL === '1';

/** Scenario sizes: full for `npm run faults`, small enough for `npm test` otherwise. */
export const SIZE = FULL
  ? {
      killMessages: 20_000,
      controlMessages: 5_000,
      restartMessages: 5_000,
      silentMessages: 1_000,
      recreateMessages: 1_000,
      smtpMessages: 300,
      fullDiskExtraMessages: 200,
      poisonNormalMessages: 500,
      poisonEach: 5,
    }
  : {
      killMessages: 1_000,
      controlMessages: 200,
      restartMessages: 600,
      silentMessages: 60,
      recreateMessages: 60,
      smtpMessages: 40,
      fullDiskExtraMessages: 40,
      poisonNormalMessages: 40,
      poisonEach: 2,
    };

/** A test timeout for a scenario whose CI size takes about `ciMs`. */
export function scenarioTimeout(ciMs: number): number {
  return FULL ? 30 * 60_000 : ciMs;
}

/** Where a queue lives, for the library, for CLI workers and for reading it back. */
export interface QueueTarget {
  /** 'Maildir' or 'Dovecot', for the summary table. */
  label: string;
  kind: 'maildir' | 'imap';
  connect: ConnectOptions;
  /** MAILBUS_* variables for `mailbus consume`. */
  env: NodeJS.ProcessEnv;
  /** The Maildir++ root holding the queue's mailboxes on disk. */
  root: string;
}

export function maildirTarget(path: string): QueueTarget {
  const url = `maildir:${path}`;
  return {
    label: 'Maildir',
    kind: 'maildir',
    connect: { url },
    env: { MAILBUS_URL: url },
    root: path,
  };
}

/** The queue account of a Dovecot; `port` lets workers go through a proxy instead. */
export function dovecotTarget(info: MailServersInfo, port = info.imapPort): QueueTarget {
  const url = `imap://${info.user}@${info.host}:${port}`;
  return {
    label: 'Dovecot',
    kind: 'imap',
    connect: { url, password: info.password, tlsCaFile: info.caFile },
    env: { MAILBUS_URL: url, MAILBUS_PASSWORD: info.password, MAILBUS_TLS_CA: info.caFile },
    root: info.maildir,
  };
}

/** A scenario's private directory with its ledger; remove() deletes it. */
export interface ScenarioDir {
  dir: string;
  ledger: Ledger;
  logDir: string;
  remove(): void;
}

export function scenarioDir(name: string): ScenarioDir {
  const dir = mkdtempSync(join(tmpdir(), `mailbus-faults-${name}-`));
  return {
    dir,
    ledger: new Ledger(join(dir, 'ledger')),
    logDir: join(dir, 'logs'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Message ids of a run: readable in the ledger, unique per topic. */
export function messageId(topic: string, n: number, retry = 0): string {
  const base = `${topic}-${String(n).padStart(6, '0')}`;
  return retry === 0 ? base : `${base}-r${retry}`;
}

export interface PublishPlan {
  topic: string;
  /** How many messages, numbered from `first` (default 1). */
  count: number;
  first?: number;
  /** Messages per publishBatch call. */
  batch: number;
  /** The payload of message number n (default `{ n }`). */
  payload?: (n: number) => unknown;
  /**
   * What a failed publish does: `throw` ends the run; `retry` records the failure and
   * publishes the same payload again under a new id after `retryPauseMs`.
   */
  onError: 'throw' | 'retry';
  retryPauseMs?: number;
  /** Pause between batches, to spread a run's publishing over its faults. */
  pauseMs?: number;
  /** Stops retrying after this time. */
  deadline?: number;
}

/**
 * Publishes a run's messages in batches, recording in the ledger every id a publish resolved
 * with (the store must hold it from then on) and every id whose publish threw.
 */
export async function publishPlan(bus: Mailbus, ledger: Ledger, plan: PublishPlan) {
  const first = plan.first ?? 1;
  const deadline = plan.deadline ?? Infinity;
  let failures = 0;
  for (let n = first; n < first + plan.count; n += plan.batch) {
    const numbers = Array.from(
      { length: Math.min(plan.batch, first + plan.count - n) },
      (_, i) => n + i,
    );
    for (let retry = 0; ; retry += 1) {
      const messages: OutgoingMessage[] = numbers.map((number) => ({
        id: messageId(plan.topic, number, retry),
        payload: plan.payload?.(number) ?? { n: number },
      }));
      try {
        ledger.published(await bus.publishBatch(plan.topic, messages));
        break;
      } catch (err) {
        ledger.publishFailed(
          messages.map((message) => `${message.id}@mailbus`),
          err,
        );
        failures += 1;
        if (plan.onError === 'throw' || Date.now() > deadline) {
          throw err;
        }
        await sleep(plan.retryPauseMs ?? 200);
      }
    }
    if (plan.pauseMs) {
      await sleep(plan.pauseMs);
    }
  }
  return { failures };
}

/** Connects the library to a target (for publishing and setup). */
export function connectTo(target: QueueTarget): Promise<Mailbus> {
  return connect(target.connect);
}

/** Polls `ready` until it is true or `timeoutMs` passed; resolves with whether it became true. */
export async function waitFor(
  ready: () => boolean | Promise<boolean>,
  timeoutMs: number,
  pollMs = 200,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await ready()) {
      return true;
    }
    if (Date.now() >= deadline) {
      return false;
    }
    await sleep(pollMs);
  }
}

export interface DrainResult {
  drained: boolean;
  /** Why the wait ended early, or what was left when it timed out. */
  reason?: string;
  ms: number;
}

/**
 * How long a run may go without any change in its group's mailboxes before waiting for it to
 * drain is given up: longer than any lease or backoff of the scenarios, short enough that a
 * run that broke a guarantee does not hold the suite up for its whole timeout.
 */
export const STALL_TIMEOUT_MS = FULL ? 60_000 : 20_000;

/**
 * Waits until `expected()` messages are settled (acked or dead) and nothing waits or is in
 * flight. Gives up early when a worker exited by itself, or when nothing changed for
 * STALL_TIMEOUT_MS: no run would drain like that.
 */
export async function waitForDrain(
  target: QueueTarget,
  topic: string,
  expected: () => number,
  fleet: WorkerFleet,
  timeoutMs: number,
): Promise<DrainResult> {
  const started = Date.now();
  let counts = groupCounts(target.root, topic);
  let shape = JSON.stringify(counts);
  let changedAt = started;
  let exits: string[] = [];
  let stalled = false;
  const drained = await waitFor(() => {
    exits = fleet.unexpectedExits();
    if (exits.length > 0) {
      return true;
    }
    counts = groupCounts(target.root, topic);
    if (JSON.stringify(counts) !== shape) {
      shape = JSON.stringify(counts);
      changedAt = Date.now();
    }
    stalled = Date.now() - changedAt > STALL_TIMEOUT_MS;
    return (
      stalled ||
      (counts.archived + counts.dead >= expected() &&
        counts.waiting + counts.inFlight + counts.scheduled === 0)
    );
  }, timeoutMs);
  const ms = Date.now() - started;
  const left =
    `archived ${counts.archived}, dead ${counts.dead}, waiting ${counts.waiting}, ` +
    `in flight ${counts.inFlight}, scheduled ${counts.scheduled} of ${expected()}`;
  if (exits.length > 0) {
    return { drained: false, reason: `gave up: ${exits.length} workers exited by themselves`, ms };
  }
  if (stalled) {
    return {
      drained: false,
      reason: `stalled: nothing changed for ${STALL_TIMEOUT_MS} ms, with ${left}`,
      ms,
    };
  }
  if (!drained) {
    return { drained: false, reason: `not drained after ${timeoutMs} ms: ${left}`, ms };
  }
  return { drained: true, ms };
}

export interface Conclusion {
  scenario: ScenarioDir;
  target: QueueTarget;
  topic: string;
  fleet: WorkerFleet;
  /** What the checker needs besides the ledger and the store (scenario name, poison...). */
  check: Omit<CheckOptions, 'store' | 'killedWorkers'>;
  /** Broken guarantees the scenario saw itself. */
  problems?: string[];
}

/**
 * Ends a run: stops the workers (SIGTERM, as an operator would), reads the group back from
 * disk, checks it against the ledger and keeps the evidence when a guarantee broke.
 */
export async function concludeRun(conclusion: Conclusion): Promise<RunReport> {
  const { scenario, target, topic, fleet, check } = conclusion;
  const problems = [...(conclusion.problems ?? []), ...fleet.unexpectedExits()];
  problems.push(...(await fleet.stop()));
  const report = checkRun(scenario.ledger, readGroupState(target.root, topic), {
    ...check,
    store: target.label,
    killedWorkers: fleet.killedWorkers,
    extraViolations: [...new Set([...(check.extraViolations ?? []), ...problems])],
  });
  const kept = keepEvidence(scenario, report);
  if (kept) {
    console.log(`evidence of ${report.scenario} / ${report.store} kept in ${kept}`);
  }
  return report;
}
