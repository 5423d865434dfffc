// Fault scenario 4: the group mailbox is deleted and created again under a running worker, as
// an operator (or a mail client) might. On Dovecot the new mailbox has a new UIDVALIDITY, so
// every UID the worker knew of the group is void; on a Maildir the folder's directory is a new
// one. The group is drained first, so the deletion itself destroys no message. Messages
// published after the new mailbox exists must be handled, within a bounded time.

import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { imapSession, mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { mailboxDir } from './mailboxes.js';
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
  waitFor,
  waitForDrain,
} from './scenario.js';
import type { QueueTarget, ScenarioDir } from './scenario.js';
import { recordReports } from './summary.js';
import { WorkerFleet } from './workers.js';

const LEASE_MS = 3_000;
/** Messages published into the new mailbox must be started within this long. */
const RECREATE_BOUND_MS = 15_000;
const DRAIN_TIMEOUT_MS = FULL ? 5 * 60_000 : 60_000;

/** Deletes the group mailbox and creates it again; returns a note of what changed. */
type Recreate = (topic: string) => Promise<{ note?: string; problem?: string }>;

async function dovecotRecreate(topic: string) {
  const client = await imapSession();
  try {
    const mailbox = `${topic}.default`;
    const uidValidity = async () => {
      const status = await client.status(mailbox, { uidValidity: true });
      return status ? status.uidValidity : undefined;
    };
    const before = await uidValidity();
    await client.mailboxDelete(mailbox);
    await client.mailboxCreate(mailbox);
    const after = await uidValidity();
    return after === before
      ? { problem: `UIDVALIDITY of ${mailbox} did not change (${String(before)})` }
      : { note: `UIDVALIDITY ${String(before)} -> ${String(after)}` };
  } finally {
    await client.logout();
  }
}

async function run(target: QueueTarget, scenario: ScenarioDir, recreate: Recreate) {
  const topic = uniqueTopic('recreate');
  const half = Math.ceil(SIZE.recreateMessages / 2);
  const bus = await connectTo(target);
  const fleet = new WorkerFleet({
    ledger: scenario.ledger,
    topic,
    env: target.env,
    flags: ['--concurrency', '4', '--lease', `${LEASE_MS}ms`, '--backoff', '0'].concat([
      '--wait',
      FULL ? '1800s' : '300s',
    ]),
    logDir: scenario.logDir,
  });
  try {
    await bus.subscribe(topic, 'default');
    fleet.start();
    const problems: string[] = [];
    // A publish racing the recreation may fail (Dovecot: "Mailbox was deleted under us"): it
    // is tried again under a new id, as a caller would, and the failures are noted.
    const plan = { topic, batch: 20, onError: 'retry' as const, retryPauseMs: 100 };
    await publishPlan(bus, scenario.ledger, { ...plan, count: half });
    const first = await waitForDrain(target, topic, () => half, fleet, DRAIN_TIMEOUT_MS);
    if (!first.drained) {
      problems.push(`before the fault: ${first.reason}`);
    }

    const at = Date.now();
    const { note, problem } = await recreate(topic);
    if (problem) {
      problems.push(problem);
    }
    const clearedAt = Date.now();
    await publishPlan(bus, scenario.ledger, { ...plan, count: half, first: half + 1 });
    const published = scenario.ledger.read().published;
    const watch = [...published.keys()].filter((id) => (published.get(id) ?? 0) >= clearedAt);
    const failed = [...scenario.ledger.read().failedPublishes.values()];
    if (failed.length > 0) {
      console.log(`${failed.length} publishes failed around the recreation; first: ${failed[0]}`);
    }
    await waitFor(() => {
      const ids = new Set(scenario.ledger.starts().map((start) => start.id));
      return watch.every((id) => ids.has(id));
    }, RECREATE_BOUND_MS + 5_000);
    const label = `group mailbox deleted and recreated${note ? ` (${note})` : ''}`;
    scenario.ledger.fault({ label, at, clearedAt, watch });

    const drain = await waitForDrain(target, topic, () => 2 * half, fleet, 5_000);
    if (!drain.drained) {
      problems.push(drain.reason ?? 'did not drain');
    }
    return await concludeRun({
      scenario,
      target,
      topic,
      fleet,
      check: { scenario: '4 group mailbox recreated', recoveryBoundMs: RECREATE_BOUND_MS },
      problems,
    });
  } finally {
    await fleet.killAll();
    await bus.close();
  }
}

describe('fault scenario 4: the group mailbox deleted and recreated under a running worker', () => {
  it(
    'Dovecot: a new UIDVALIDITY, and the worker handles what arrives in the new mailbox',
    async () => {
      const scenario = scenarioDir('recreate-imap');
      try {
        const report = await run(dovecotTarget(mailServers()), scenario, dovecotRecreate);
        recordReports([report]);
        expect(report.violations).toEqual([]);
      } finally {
        scenario.remove();
      }
    },
    scenarioTimeout(60_000),
  );

  it(
    'Maildir: a new folder directory, and the worker handles what arrives in it',
    async () => {
      const scenario = scenarioDir('recreate-maildir');
      const target = maildirTarget(join(scenario.dir, 'queue'));
      try {
        const report = await run(target, scenario, async (topic) => {
          rmSync(mailboxDir(target.root, `${topic}.default`), { recursive: true, force: true });
          const admin = await connectTo(target);
          await admin.subscribe(topic, 'default');
          await admin.close();
          return {};
        });
        recordReports([report]);
        expect(report.violations).toEqual([]);
      } finally {
        scenario.remove();
      }
    },
    scenarioTimeout(60_000),
  );
});
