// Fault scenario 3: the IMAP connections of running workers go silent without closing. Two
// workers reach Dovecot through a TCP proxy on loopback; once they have handled a first batch,
// the proxy stops forwarding on every open connection but keeps it open (new connections still
// get through). A second batch is published directly meanwhile. The workers must notice the
// dead connections within a bounded time (each silenced connection is closed by its client),
// reconnect, and handle the second batch: all of it started within that bound plus the time the
// first batch took them, since the second batch waits for them as one backlog.

import { afterEach, describe, expect, it } from 'vitest';
import { mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { SilenceableProxy } from './proxy.js';
import {
  FULL,
  SIZE,
  concludeRun,
  connectTo,
  dovecotTarget,
  messageId,
  publishPlan,
  scenarioDir,
  scenarioTimeout,
  waitFor,
  waitForDrain,
} from './scenario.js';
import { recordReports } from './summary.js';
import { WorkerFleet } from './workers.js';

const WORKERS = 2;
const LEASE_MS = 3_000;
/**
 * Every silenced connection must be closed by its client within this long, and a worker must
 * be handling again by then: a few leases. A TCP connection that says nothing is only found
 * dead by a check of its own (a command with a deadline, a socket timeout), not by waiting for
 * the server.
 */
const SILENCE_BOUND_MS = 20_000;
const DRAIN_TIMEOUT_MS = FULL ? 5 * 60_000 : 60_000;

describe('fault scenario 3: IMAP connections that go silent without closing', () => {
  let proxy: SilenceableProxy | undefined;

  afterEach(async () => {
    await proxy?.close();
  });

  it(
    'workers notice within a bounded time, reconnect and handle what arrived meanwhile',
    async () => {
      const info = mailServers();
      proxy = await SilenceableProxy.start({ host: info.host, port: info.imapPort });
      const direct = dovecotTarget(info);
      const proxied = dovecotTarget(info, proxy.port);
      const scenario = scenarioDir('silent');
      const topic = uniqueTopic('silent');
      const half = Math.ceil(SIZE.silentMessages / 2);
      const bus = await connectTo(direct);
      const fleet = new WorkerFleet({
        ledger: scenario.ledger,
        topic,
        env: proxied.env,
        flags: ['--concurrency', '4', '--lease', `${LEASE_MS}ms`, '--backoff', '0'].concat([
          '--wait',
          FULL ? '1800s' : '300s',
        ]),
        logDir: scenario.logDir,
      });
      try {
        await bus.subscribe(topic, 'default');
        for (let i = 0; i < WORKERS; i += 1) {
          fleet.start();
        }
        const problems: string[] = [];
        const plan = { topic, batch: 20, onError: 'throw' as const };
        await publishPlan(bus, scenario.ledger, { ...plan, count: half });
        const first = await waitForDrain(direct, topic, () => half, fleet, DRAIN_TIMEOUT_MS);
        if (!first.drained) {
          problems.push(`before the fault: ${first.reason}`);
        }
        // From the first handler start of the first batch to its last: how long the workers
        // take to get through a batch of this size on this machine.
        const firstStarts = scenario.ledger.starts().map((start) => start.at);
        const batchMs =
          firstStarts.length > 0 ? Math.max(...firstStarts) - Math.min(...firstStarts) : 0;
        const recoveryBoundMs = SILENCE_BOUND_MS + batchMs;

        // Silence: every open connection goes quiet; then the second batch arrives.
        const silenced = proxy.silence();
        const at = Date.now();
        if (silenced === 0) {
          problems.push('no IMAP connection was open to silence');
        }
        const silentProxy = proxy;
        const noticed = waitFor(() => silentProxy.silenced === 0, SILENCE_BOUND_MS, 100);
        await publishPlan(bus, scenario.ledger, { ...plan, count: half, first: half + 1 });
        const watch = Array.from(
          { length: half },
          (_, i) => `${messageId(topic, half + 1 + i)}@mailbus`,
        );
        const started = (): boolean => {
          const ids = new Set(scenario.ledger.starts().map((start) => start.id));
          return watch.every((id) => ids.has(id));
        };
        if (!(await noticed)) {
          problems.push(
            `${proxy.silenced} of the ${silenced} silenced connections were still open, unnoticed, ` +
              `${Math.round((Date.now() - at) / 1000)} s later`,
          );
        }
        const recovered = await waitFor(started, at + recoveryBoundMs + 5_000 - Date.now());
        scenario.ledger.fault({
          label: `${silenced} IMAP connections silenced`,
          at,
          clearedAt: at,
          watch,
        });
        if (!recovered) {
          problems.push(
            `the messages published during the silence were not all started ` +
              `${Math.round((Date.now() - at) / 1000)} s later`,
          );
        }

        const drain = await waitForDrain(
          direct,
          topic,
          () => 2 * half,
          fleet,
          recovered ? DRAIN_TIMEOUT_MS : 1_000,
        );
        if (!drain.drained) {
          problems.push(drain.reason ?? 'did not drain');
        }
        // Workers stuck on a silent connection may not even stop: let them see it closed.
        await proxy.close();
        const report = await concludeRun({
          scenario,
          target: direct,
          topic,
          fleet,
          check: { scenario: '3 silent IMAP connection', recoveryBoundMs },
          problems,
        });
        recordReports([report]);
        expect(report.violations).toEqual([]);
      } finally {
        await fleet.killAll();
        await bus.close();
        scenario.remove();
      }
    },
    scenarioTimeout(120_000),
  );
});
