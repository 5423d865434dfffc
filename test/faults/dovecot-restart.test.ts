// Fault scenario 2: Dovecot stopped and started again twice while four workers consume and a
// publisher publishes, once gracefully (SIGTERM) and once as a crash (SIGKILL to every Dovecot
// process). Workers and publisher must reconnect by themselves. A publish either resolves or
// throws; every id a publish resolved with must be stored (in the topic's inbox, and handled
// at the end). A publish that threw is tried again under a new id. On a private Dovecot and
// Postfix pair: the shared servers of the other tests are never stopped.

import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMailServers } from '../servers/mail-servers.js';
import type { MailServers, StopMode } from '../servers/mail-servers.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { readMailboxIds } from './mailboxes.js';
import {
  FULL,
  SIZE,
  concludeRun,
  connectTo,
  dovecotTarget,
  publishPlan,
  scenarioDir,
  scenarioTimeout,
  waitFor,
  waitForDrain,
} from './scenario.js';
import { recordReports } from './summary.js';
import { WorkerFleet } from './workers.js';

const WORKERS = 4;
const LEASE_MS = 3_000;
/** How long Dovecot stays down each time. */
const OUTAGE_MS = 1_500;
/** When the outages happen: once this share of the run is published. */
const OUTAGE_AT_SHARE = [0.25, 0.6];
const OUTAGE_MODES: StopMode[] = ['graceful', 'crash'];
/**
 * Handling must resume within this long of Dovecot being back: the reconnect backoff
 * (at most 5 s) and the worker's claim retry (doubling from 200 ms) both run out by then.
 */
const RECOVERY_BOUND_MS = 15_000;
const PUBLISH_BATCH = FULL ? 50 : 20;
/** Spreads publishing over the run, so both outages fall inside it. */
const PUBLISH_PAUSE_MS = FULL ? 250 : 400;
const DRAIN_TIMEOUT_MS = FULL ? 10 * 60_000 : 90_000;

describe('fault scenario 2: Dovecot stopped and restarted twice', () => {
  let servers: MailServers | undefined;

  beforeAll(async () => {
    servers = await startMailServers();
  }, 120_000);

  afterAll(async () => {
    await servers?.stop();
  });

  it(
    'workers and publisher reconnect; every id reported published is stored and handled',
    async () => {
      const info = (servers as MailServers).info;
      const target = dovecotTarget(info);
      const scenario = scenarioDir('restart');
      const topic = uniqueTopic('restart');
      const count = SIZE.restartMessages;
      const bus = await connectTo(target);
      const fleet = new WorkerFleet({
        ledger: scenario.ledger,
        topic,
        env: target.env,
        flags: [
          ...['--concurrency', '4', '--lease', `${LEASE_MS}ms`, '--backoff', '0'],
          ...['--max-attempts', '1000', '--wait', FULL ? '1800s' : '300s'],
        ],
        logDir: scenario.logDir,
      });
      try {
        await bus.subscribe(topic, 'default');
        for (let i = 0; i < WORKERS; i += 1) {
          fleet.start();
        }
        const publishing = publishPlan(bus, scenario.ledger, {
          topic,
          count,
          batch: PUBLISH_BATCH,
          pauseMs: PUBLISH_PAUSE_MS,
          onError: 'retry',
          retryPauseMs: 250,
          deadline: Date.now() + DRAIN_TIMEOUT_MS,
        });

        const problems: string[] = [];
        for (const [index, share] of OUTAGE_AT_SHARE.entries()) {
          const mode = OUTAGE_MODES[index] as StopMode;
          await waitFor(() => scenario.ledger.read().published.size >= count * share, 60_000);
          const at = Date.now();
          await servers?.stopDovecot(mode);
          await sleep(OUTAGE_MS);
          await servers?.startDovecot();
          scenario.ledger.fault({ label: `Dovecot stopped (${mode})`, at, clearedAt: Date.now() });
        }
        const { failures } = await publishing;
        if (failures === 0) {
          problems.push('no publish failed: the outages did not hit the publisher');
        }

        const drain = await waitForDrain(target, topic, () => count, fleet, DRAIN_TIMEOUT_MS);
        if (!drain.drained) {
          problems.push(drain.reason ?? 'did not drain');
        }
        // A resolved publish means stored: every such id is in the topic's inbox.
        const stored = new Set(readMailboxIds(target.root, topic));
        const missing = [...scenario.ledger.read().published.keys()].filter(
          (id) => !stored.has(id),
        );
        if (missing.length > 0) {
          problems.push(
            `${missing.length} ids reported published are not in the topic mailbox: ` +
              missing.slice(0, 5).join(', '),
          );
        }

        const report = await concludeRun({
          scenario,
          target,
          topic,
          fleet,
          check: { scenario: '2 Dovecot restarted twice', recoveryBoundMs: RECOVERY_BOUND_MS },
          problems,
        });
        recordReports([report]);
        expect(report.violations).toEqual([]);
        expect(report.faults).toBe(2);
      } finally {
        await fleet.killAll();
        await bus.close();
        scenario.remove();
      }
    },
    scenarioTimeout(150_000),
  );
});
