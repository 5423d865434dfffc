// Fault scenario 7: handlers that fail by hanging and by crashing. Among ordinary messages, some
// make the --exec command sleep far past the attempt's time limit (--timeout), others make it
// kill itself with SIGSEGV. Each such attempt must fail, be retried after its backoff, and
// after --max-attempts the message must be a dead letter that says why; the ordinary messages,
// also those published after the poison, must be handled exactly once by workers that keep
// running, and no hung command may outlive its time limit. On a Maildir and on Dovecot.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';
import {
  FULL,
  SIZE,
  concludeRun,
  connectTo,
  dovecotTarget,
  maildirTarget,
  messageId,
  publishPlan,
  scenarioDir,
  scenarioTimeout,
  waitForDrain,
} from './scenario.js';
import type { QueueTarget, ScenarioDir } from './scenario.js';
import { recordReports } from './summary.js';
import { WorkerFleet } from './workers.js';

const WORKERS = 2;
const MAX_ATTEMPTS = 3;
const TIMEOUT_MS = 600;
const BACKOFF_MS = 100;
/** Retry delays stray up to 20 % either way (src/consumer/backoff.ts). */
const BACKOFF_JITTER = 0.2;
const DRAIN_TIMEOUT_MS = FULL ? 5 * 60_000 : 60_000;

type Kind = 'hang' | 'segv' | 'ok';

async function run(target: QueueTarget, scenario: ScenarioDir) {
  const topic = uniqueTopic('poison');
  const normal = SIZE.poisonNormalMessages;
  const each = SIZE.poisonEach;
  const total = normal + 2 * each;
  // The poison sits in the middle of the run: ordinary messages come before and after it.
  const kinds = new Map<number, Kind>();
  for (let i = 0; i < each; i += 1) {
    kinds.set(Math.floor(total / 2) - each + 2 * i, 'hang');
    kinds.set(Math.floor(total / 2) - each + 2 * i + 1, 'segv');
  }
  const kindOf = (n: number): Kind => kinds.get(n) ?? 'ok';
  const poison = new Set<string>();
  const lastError = new Map<string, RegExp>();
  for (const [n, kind] of kinds) {
    const id = `${messageId(topic, n)}@mailbus`;
    poison.add(id);
    lastError.set(
      id,
      kind === 'hang' ? new RegExp(`timed out after ${TIMEOUT_MS} ms`) : /killed by SIGSEGV/,
    );
  }

  const bus = await connectTo(target);
  const fleet = new WorkerFleet({
    ledger: scenario.ledger,
    topic,
    env: target.env,
    flags: [
      ...['--concurrency', '2', '--timeout', `${TIMEOUT_MS}ms`, '--backoff', `${BACKOFF_MS}ms`],
      ...['--max-attempts', String(MAX_ATTEMPTS), '--wait', FULL ? '1800s' : '300s'],
    ],
    behaviour: { hang: true, segv: true },
    logDir: scenario.logDir,
  });
  try {
    await bus.subscribe(topic, 'default');
    for (let i = 0; i < WORKERS; i += 1) {
      fleet.start();
    }
    const problems: string[] = [];
    await publishPlan(bus, scenario.ledger, {
      topic,
      count: total,
      batch: 10,
      pauseMs: 50,
      onError: 'throw',
      payload: (n) => (kindOf(n) === 'ok' ? { n } : { kind: kindOf(n) }),
    });
    const drain = await waitForDrain(target, topic, () => total, fleet, DRAIN_TIMEOUT_MS);
    if (!drain.drained) {
      problems.push(drain.reason ?? 'did not drain');
    }
    // Each poison message ran attempts 1, 2, 3 in order, each after the previous one's backoff.
    const starts = scenario.ledger.starts();
    for (const id of poison) {
      const mine = starts.filter((start) => start.id === id);
      const attempts = mine.map((start) => start.attempt).join(',');
      if (attempts !== Array.from({ length: MAX_ATTEMPTS }, (_, i) => i + 1).join(',')) {
        problems.push(`poison message ${id} ran attempts ${attempts}`);
      }
      for (let i = 1; i < mine.length; i += 1) {
        const gap = (mine[i]?.at ?? 0) - (mine[i - 1]?.at ?? 0);
        const backoff = BACKOFF_MS * 2 ** (i - 1) * (1 - BACKOFF_JITTER);
        if (gap < backoff) {
          problems.push(`attempt ${i + 1} of ${id} came ${gap} ms after attempt ${i}`);
        }
      }
    }
    const hung = fleet.reapHandlers();
    if (hung > 0) {
      problems.push(`${hung} handler commands outlived their time limit`);
    }
    return await concludeRun({
      scenario,
      target,
      topic,
      fleet,
      check: {
        scenario: '7 hanging and crashing handlers',
        poison: { ids: poison, maxAttempts: MAX_ATTEMPTS, lastError },
      },
      problems,
    });
  } finally {
    await fleet.killAll();
    await bus.close();
  }
}

describe('fault scenario 7: handlers that hang past their time limit or crash', () => {
  const targets: Array<[string, (scenario: ScenarioDir) => QueueTarget]> = [
    ['Maildir', (scenario) => maildirTarget(join(scenario.dir, 'queue'))],
    ['Dovecot', () => dovecotTarget(mailServers())],
  ];
  for (const [label, targetOf] of targets) {
    it(
      `${label}: attempts fail, are retried, dead-letter after max attempts; workers go on`,
      async () => {
        const scenario = scenarioDir('poison');
        try {
          const report = await run(targetOf(scenario), scenario);
          recordReports([report]);
          expect(report.violations).toEqual([]);
          expect(report.dead).toBe(2 * SIZE.poisonEach);
        } finally {
          scenario.remove();
        }
      },
      scenarioTimeout(60_000),
    );
  }
});
