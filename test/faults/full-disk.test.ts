// Fault scenario 6: a Maildir on a full file system. The queue lives on a 2 MB tmpfs mounted for
// the test, mostly taken by a filler file; messages are published one at a time while two
// workers consume, until the file system is full. The failing publish must reject with
// ESTORAGE naming ENOSPC (the command line likewise, in one line on stderr); what was stored
// before must stay intact and be handled; the workers must keep running, and once space is
// freed, new publishes succeed and are handled too.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isMailbusError } from '../../src/index.js';
import { runCli } from '../support/cli.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { damagedFiles, mailboxDir } from './mailboxes.js';
import {
  FULL,
  SIZE,
  concludeRun,
  connectTo,
  maildirTarget,
  messageId,
  publishPlan,
  scenarioDir,
  scenarioTimeout,
  waitForDrain,
} from './scenario.js';
import { recordReports } from './summary.js';
import { WorkerFleet } from './workers.js';

/**
 * The file system's size, and what the filler leaves free for messages: each takes one 4 KB
 * page. Removing the filler frees over 1.3 MB, room for the extra messages (SIZE).
 */
const TMPFS_SIZE = '2m';
const LEFT_FREE_BYTES = FULL ? 600 * 1024 : 160 * 1024;
/** Publishes tried before the scenario concludes the file system never filled. */
const MAX_PUBLISHES = 5_000;
/** Further publishes into the full file system: each must fail cleanly too. */
const PUBLISHES_WHILE_FULL = 3;
const RECOVERY_BOUND_MS = 10_000;
const DRAIN_TIMEOUT_MS = FULL ? 5 * 60_000 : 60_000;

function mountTmpfs(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const result = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE}`, 'tmpfs', dir], {
    encoding: 'utf8',
  });
  if (result.status !== 0) {
    throw new Error(`cannot mount a tmpfs on ${dir} (this scenario needs root): ${result.stderr}`);
  }
}

function unmount(dir: string): void {
  if (spawnSync('umount', [dir]).status !== 0) {
    spawnSync('umount', ['-l', dir]); // still busy: detach it now, the kernel frees it later
  }
}

function isNoSpace(err: unknown): boolean {
  return isMailbusError(err, 'ESTORAGE') && /ENOSPC/.test(err.message);
}

describe('fault scenario 6: a Maildir on a full file system', () => {
  it(
    'publish fails with ESTORAGE (ENOSPC), nothing stored is damaged, workers keep running',
    async () => {
      const scenario = scenarioDir('full-disk');
      const mount = join(scenario.dir, 'tmpfs');
      mountTmpfs(mount);
      const target = maildirTarget(join(mount, 'queue'));
      const topic = uniqueTopic('full');
      const problems: string[] = [];
      const bus = await connectTo(target);
      const fleet = new WorkerFleet({
        ledger: scenario.ledger, // on the scenario's own disk, not on the full tmpfs
        topic,
        env: target.env,
        flags: ['--concurrency', '2', '--backoff', '0', '--wait', FULL ? '1800s' : '300s'],
        logDir: scenario.logDir,
      });
      try {
        await bus.subscribe(topic, 'default');
        fleet.start();
        fleet.start();
        const filler = join(mount, 'filler');
        const stat = fs.statfsSync(mount);
        const free = stat.bavail * stat.bsize;
        fs.writeFileSync(filler, Buffer.alloc(Math.max(0, free - LEFT_FREE_BYTES)));

        // Publish until the file system is full.
        let failure: unknown;
        let n = 1;
        for (; n <= MAX_PUBLISHES && failure === undefined; n += 1) {
          try {
            scenario.ledger.published([
              await bus.publish(topic, { n }, { id: messageId(topic, n) }),
            ]);
          } catch (err) {
            failure = err;
            scenario.ledger.publishFailed([`${messageId(topic, n)}@mailbus`], err);
          }
        }
        const fullAt = Date.now();
        if (failure === undefined) {
          problems.push(`the file system did not fill after ${MAX_PUBLISHES} publishes`);
        } else if (!isNoSpace(failure)) {
          problems.push(`the failed publish did not say ESTORAGE and ENOSPC: ${String(failure)}`);
        }
        for (let i = 0; i < PUBLISHES_WHILE_FULL; i += 1, n += 1) {
          try {
            await bus.publish(topic, { n }, { id: messageId(topic, n) });
            problems.push(`a publish into the full file system succeeded (message ${n})`);
          } catch (err) {
            scenario.ledger.publishFailed([`${messageId(topic, n)}@mailbus`], err);
            if (!isNoSpace(err)) {
              problems.push(`a publish while full failed otherwise: ${String(err)}`);
            }
          }
        }
        const cli = await runCli(['publish', topic, '{"cli":true}'], { env: target.env });
        const cliError = cli.stderr.trim();
        if (cli.code === 0 || !/ENOSPC/.test(cliError) || cliError.includes('\n')) {
          problems.push(`mailbus publish on a full disk: exit ${cli.code}, stderr "${cliError}"`);
        }

        // Nothing stored is damaged, and no half-written file is left behind.
        for (const mailbox of [topic, `${topic}.default`]) {
          const damaged = damagedFiles(target.root, mailbox);
          if (damaged.length > 0) {
            problems.push(`${damaged.length} damaged messages in ${mailbox}: ${damaged[0]}`);
          }
        }
        const leftovers = fs.readdirSync(join(mailboxDir(target.root, topic), 'tmp'));
        if (leftovers.length > 0) {
          problems.push(`${leftovers.length} half-written files left in ${topic}/tmp`);
        }

        // Everything stored before is handled while the disk is still full.
        const stored = () => scenario.ledger.read().published.size;
        const before = await waitForDrain(target, topic, stored, fleet, DRAIN_TIMEOUT_MS);
        if (!before.drained) {
          problems.push(`while full: ${before.reason}`);
        }

        // Space again: publishing works, the same workers handle the new messages.
        fs.rmSync(filler);
        const clearedAt = Date.now();
        const extra = SIZE.fullDiskExtraMessages;
        await publishPlan(bus, scenario.ledger, {
          topic,
          first: n,
          count: extra,
          batch: 10,
          onError: 'throw',
        });
        const watch = Array.from({ length: extra }, (_, i) => `${messageId(topic, n + i)}@mailbus`);
        scenario.ledger.fault({ label: 'file system full (ENOSPC)', at: fullAt, clearedAt, watch });
        const after = await waitForDrain(target, topic, stored, fleet, DRAIN_TIMEOUT_MS);
        if (!after.drained) {
          problems.push(`after space was freed: ${after.reason}`);
        }

        const report = await concludeRun({
          scenario,
          target,
          topic,
          fleet,
          check: { scenario: '6 full file system', recoveryBoundMs: RECOVERY_BOUND_MS },
          problems,
        });
        recordReports([report]);
        expect(report.violations).toEqual([]);
        expect(report.published).toBeGreaterThan(extra);
      } finally {
        await fleet.killAll();
        await bus.close();
        unmount(mount);
        scenario.remove();
      }
    },
    scenarioTimeout(60_000),
  );
});
