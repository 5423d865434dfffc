// Fault scenario 1: kill -9 of random workers, again and again, while four worker processes
// (`mailbus consume --exec`) handle a run of messages that is still being published; each
// killed worker is replaced at once, so the run finishes. Every published message must be
// handled, and a message may be started twice only when the worker that started it first was
// killed. Beside each kill run, a fault-free control run of the same shape must show no
// duplicate at all. On a Maildir and on the shared Dovecot.

import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';
import type { RunReport } from './ledger.js';
import { groupCounts, heldByProcess, inFlightOfProcess } from './mailboxes.js';
import {
  FULL,
  SIZE,
  concludeRun,
  connectTo,
  dovecotTarget,
  maildirTarget,
  publishPlan,
  scenarioDir,
  scenarioTimeout,
  waitForDrain,
} from './scenario.js';
import type { QueueTarget, ScenarioDir } from './scenario.js';
import { recordReports } from './summary.js';
import { WorkerFleet } from './workers.js';

const WORKERS = 4;
/** Short, so that a killed worker's claims come back within seconds; heartbeat every 1 s. */
const LEASE_MS = 3_000;
/** A kill is recovered once the lease expired and the next recovery pass ran, plus load. */
const RECOVERY_BOUND_MS = 2 * LEASE_MS + 4_000;
/** Time between two kills, drawn at random from this range. */
const KILL_INTERVAL_MS = { min: 1_000, max: 2_500 };
/** Kills stop once this share of the run is acked, so that the run can drain. */
const KILL_UNTIL_SHARE = 0.9;
const PUBLISH_BATCH = 100;
/** Spreads publishing over the run, so kills hit while messages are still arriving. */
const PUBLISH_PAUSE_MS = 400;
/** How long a run may take to drain after publishing ended. */
const DRAIN_TIMEOUT_MS = FULL ? 15 * 60_000 : 90_000;

function workerFlags(): string[] {
  return [
    ['--concurrency', '4'],
    ['--lease', `${LEASE_MS}ms`],
    // Kills count as attempts: a message killed under several workers must not die of it.
    ['--max-attempts', '1000'],
    ['--backoff', '0'],
    // A worker left behind by a crashed test stops by itself.
    ['--wait', FULL ? '1800s' : '300s'],
  ].flat();
}

type TargetOf = (scenario: ScenarioDir) => QueueTarget;

async function run(targetOf: TargetOf, mode: 'control' | 'kills'): Promise<RunReport> {
  const scenario = scenarioDir(`kill-${mode}`);
  const target = targetOf(scenario);
  const topic = uniqueTopic(mode === 'kills' ? 'kills' : 'control');
  const count = mode === 'kills' ? SIZE.killMessages : SIZE.controlMessages;
  const bus = await connectTo(target);
  const fleet = new WorkerFleet({
    ledger: scenario.ledger,
    topic,
    env: target.env,
    flags: workerFlags(),
    logDir: scenario.logDir,
    inFlightOf: (pid) => inFlightOfProcess(target.root, topic, pid),
    heldBy: (pid) => heldByProcess(target.root, topic, pid),
  });
  try {
    // The group exists before the first publish, so that it gets every message.
    await bus.subscribe(topic, 'default');
    for (let i = 0; i < WORKERS; i += 1) {
      fleet.start();
    }
    let publishDone = false;
    const publishing = publishPlan(bus, scenario.ledger, {
      topic,
      count,
      batch: PUBLISH_BATCH,
      pauseMs: PUBLISH_PAUSE_MS,
      onError: 'throw',
    }).finally(() => (publishDone = true));

    const problems: string[] = [];
    if (mode === 'kills') {
      for (;;) {
        const { min, max } = KILL_INTERVAL_MS;
        await sleep(min + Math.random() * (max - min));
        const acked = groupCounts(target.root, topic).archived;
        if ((publishDone && acked >= count * KILL_UNTIL_SHARE) || fleet.unexpectedExits().length) {
          break;
        }
        const live = fleet.live();
        const victim = live[Math.floor(Math.random() * live.length)];
        if (victim) {
          await fleet.kill(victim);
          fleet.start();
        }
      }
    }
    await publishing;

    const drain = await waitForDrain(target, topic, () => count, fleet, DRAIN_TIMEOUT_MS);
    if (!drain.drained) {
      problems.push(drain.reason ?? 'did not drain');
    }
    return await concludeRun({
      scenario,
      target,
      topic,
      fleet,
      check: {
        scenario: mode === 'kills' ? '1 kill -9 workers' : '1 control (no faults)',
        faultFree: mode === 'control',
        recoveryBoundMs: RECOVERY_BOUND_MS,
      },
      problems,
    });
  } finally {
    await fleet.killAll();
    await bus.close();
    scenario.remove();
  }
}

describe('fault scenario 1: kill -9 of random workers', () => {
  const targets: Array<[string, TargetOf]> = [
    ['Maildir', (scenario) => maildirTarget(join(scenario.dir, 'queue'))],
    ['Dovecot', () => dovecotTarget(mailServers())],
  ];

  for (const [label, target] of targets) {
    it(
      `${label}: a fault-free control run hands out every message exactly once`,
      async () => {
        const report = await run(target, 'control');
        recordReports([report]);
        expect(report.violations).toEqual([]);
        expect(report.duplicates).toBe(0);
      },
      scenarioTimeout(90_000),
    );

    it(
      `${label}: workers killed again and again lose nothing`,
      async () => {
        const report = await run(target, 'kills');
        recordReports([report]);
        expect(report.violations).toEqual([]);
        expect(report.faults).toBeGreaterThan(0);
      },
      scenarioTimeout(150_000),
    );
  }
});
