// Fault scenario 5: the SMTP server answers 4xx for a while. Publishing goes through a stand-in
// SMTP server in front of the shared Postfix (smtp-front.ts) that is first down (connections
// refused), then defers every recipient with 451, then relays to Postfix. Publishes made during
// the trouble must retry and succeed (src/transport/smtp.ts), every one must reach Dovecot, and
// workers must handle them all. A 5xx refusal must fail a publish at once, without retries; a
// deferral of one recipient must resend to that recipient only.

import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, isMailbusError } from '../../src/index.js';
import type { Mailbus } from '../../src/index.js';
import { groupAddress } from '../../src/transport/addresses.js';
import { SMTP_RETRY_FIRST_DELAY_MS } from '../../src/transport/smtp.js';
import { mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { readMailboxIds } from './mailboxes.js';
import { SmtpFront } from './smtp-front.js';
import {
  FULL,
  SIZE,
  concludeRun,
  dovecotTarget,
  messageId,
  scenarioDir,
  scenarioTimeout,
  waitFor,
  waitForDrain,
} from './scenario.js';
import { recordReports } from './summary.js';
import { WorkerFleet } from './workers.js';

/** How long the front refuses connections, then how long it defers every recipient. */
const DOWN_MS = 1_000;
const DEFER_MS = 2_000;
/** Publishes running at once. */
const PUBLISH_CONCURRENCY = 8;
/**
 * Every publish the fault hit must be done within this long of the server taking mail again:
 * the longest wait between two tries is 4 s (SMTP_RETRY_MAX_DELAY_MS).
 */
const RECOVERY_BOUND_MS = 6_000;
/** Postfix hands mail to Dovecot over LMTP after accepting it: allow it this long. */
const DELIVERY_TIMEOUT_MS = 20_000;
const DRAIN_TIMEOUT_MS = FULL ? 5 * 60_000 : 60_000;

describe('fault scenario 5: the SMTP server answers 4xx for a while', () => {
  let front: SmtpFront | undefined;
  let bus: Mailbus | undefined;

  afterEach(async () => {
    await bus?.close();
    await front?.close();
  });

  it(
    'SMTP publishes retry and succeed, every message arrives and is handled; 5xx fails at once',
    async () => {
      const info = mailServers();
      const target = dovecotTarget(info);
      const address = `${info.user}@${info.domain}`;
      front = await SmtpFront.create({ host: info.host, port: info.smtpPort });
      const scenario = scenarioDir('smtp');
      const topic = uniqueTopic('smtp');
      const count = SIZE.smtpMessages;
      bus = await connect({
        ...target.connect,
        smtpUrl: `smtp://127.0.0.1:${front.port}`,
        address,
      });
      const fleet = new WorkerFleet({
        ledger: scenario.ledger,
        topic,
        env: target.env,
        flags: ['--concurrency', '4', '--backoff', '0', '--wait', FULL ? '1800s' : '300s'],
        logDir: scenario.logDir,
      });
      const problems: string[] = [];
      try {
        await bus.subscribe(topic, 'default');

        // Publish while the front is down, then deferring, then relaying.
        const at = Date.now();
        let next = 1;
        // When each publish started and resolved: recovery is measured on those the fault hit.
        const timings: Array<{ startedAt: number; resolvedAt: number }> = [];
        const publisher = async (): Promise<void> => {
          while (next <= count) {
            const id = messageId(topic, next);
            next += 1;
            const startedAt = Date.now();
            try {
              const published = await (bus as Mailbus).publish(topic, { id }, { id });
              scenario.ledger.published([published]);
              timings.push({ startedAt, resolvedAt: Date.now() });
            } catch (err) {
              scenario.ledger.publishFailed([`${id}@mailbus`], err);
              problems.push(`publish of ${id} threw: ${(err as Error).message}`);
            }
          }
        };
        const publishing = Promise.all(Array.from({ length: PUBLISH_CONCURRENCY }, publisher));
        await sleep(DOWN_MS);
        await front.up();
        await sleep(DEFER_MS);
        front.mode = 'relay';
        const clearedAt = Date.now();
        await publishing;
        scenario.ledger.fault({ label: 'SMTP down, then 451 for every recipient', at, clearedAt });
        const hit = timings.filter((timing) => timing.startedAt < clearedAt);
        const recoveryMs = Math.max(0, ...hit.map((timing) => timing.resolvedAt)) - clearedAt;
        if (front.deferrals === 0) {
          problems.push('the front deferred nothing: the fault did not happen');
        }

        // Every id a publish resolved with is in the topic's and the group's mailbox.
        const published = [...scenario.ledger.read().published.keys()];
        const missing = (): string[] => {
          const stored = new Set([
            ...readMailboxIds(target.root, topic),
            ...readMailboxIds(target.root, `${topic}.default`),
            ...readMailboxIds(target.root, `${topic}.default.Archive`),
          ]);
          return published.filter((id) => !stored.has(id));
        };
        if (!(await waitFor(() => missing().length === 0, DELIVERY_TIMEOUT_MS))) {
          problems.push(`${missing().length} published messages never reached Dovecot`);
        }

        // A permanent refusal (550 for the group) fails the publish at the first try.
        const refusedAddress = groupAddress(address, topic, 'default');
        front.refused.add(refusedAddress);
        const before = front.rcptCount(refusedAddress);
        const started = Date.now();
        let refusal: unknown;
        try {
          await bus.publish(topic, { refused: true }, { id: `${topic}-refused` });
        } catch (err) {
          refusal = err;
        }
        const tries = front.rcptCount(refusedAddress) - before;
        if (!isMailbusError(refusal, 'EPROTOCOL') || !/550/.test(refusal.message)) {
          problems.push(`a 550 did not fail the publish with EPROTOCOL: ${String(refusal)}`);
        }
        if (tries !== 1 || Date.now() - started >= SMTP_RETRY_FIRST_DELAY_MS) {
          problems.push(`a 550 was tried ${tries} times over ${Date.now() - started} ms`);
        }
        front.refused.clear();

        // A message deferred for one recipient only is sent again to that one alone: the
        // topic mailbox, which took it at once, holds one copy, and so does the group.
        front.deferTimes.set(refusedAddress, 2);
        const partialId = await bus.publish(topic, { partial: true }, { id: `${topic}-partial` });
        const copies = async (mailbox: string): Promise<number> => {
          await waitFor(() => readMailboxIds(target.root, mailbox).includes(partialId), 20_000);
          return readMailboxIds(target.root, mailbox).filter((id) => id === partialId).length;
        };
        const inTopic = await copies(topic);
        const inGroup = await copies(`${topic}.default`);
        if (inTopic !== 1 || inGroup !== 1) {
          problems.push(
            `a message deferred for the group only left ${inTopic} copies in the topic ` +
              `and ${inGroup} in the group, not one each`,
          );
        }
        scenario.ledger.published([partialId]);

        // Workers handle everything that was published.
        fleet.start();
        fleet.start();
        const drain = await waitForDrain(target, topic, () => count + 1, fleet, DRAIN_TIMEOUT_MS);
        if (!drain.drained) {
          problems.push(drain.reason ?? 'did not drain');
        }
        const report = await concludeRun({
          scenario,
          target,
          topic,
          fleet,
          check: {
            scenario: '5 SMTP 4xx for a while',
            recoveryMs,
            recoveryBoundMs: RECOVERY_BOUND_MS,
          },
          problems,
        });
        recordReports([report]);
        expect(report.violations).toEqual([]);
        expect(report.published).toBe(count + 1);
      } finally {
        await fleet.killAll();
        scenario.remove();
      }
    },
    scenarioTimeout(60_000),
  );
});
