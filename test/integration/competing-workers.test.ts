// Four worker processes compete for one group's 5,000 messages: every message must be handled
// exactly once, on the Maildir (claims by rename) and on Dovecot (claims by conditional store).

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import type { ConnectOptions } from '../../src/index.js';
import { CLI } from '../support/cli.js';
import { imapEnv, imapOptions } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const MESSAGES = 5000;
const WORKERS = 4;

interface WorkerRun {
  ids: string[];
  /** Its log lines of level warn and above, shown when a message goes missing. */
  warnings: string[];
}

/** Runs one `mailbus consume` process until it has been idle for a while. */
function workerProcess(topic: string, env: NodeJS.ProcessEnv): Promise<WorkerRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [CLI, 'consume', topic, '--concurrency', '8', '--prefetch', '32', '--wait', '4s'],
      {
        env: { ...process.env, MAILBUS_LOG_LEVEL: 'warn', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) {
        reject(new Error(`worker exited with ${code}: ${stderr}`));
        return;
      }
      const lines = (text: string): string[] => (text.trim() === '' ? [] : text.trim().split('\n'));
      resolve({
        ids: lines(stdout).map((line) => JSON.parse(line).id),
        warnings: lines(stderr),
      });
    });
  });
}

async function compete(options: ConnectOptions, env: NodeJS.ProcessEnv): Promise<void> {
  const topic = uniqueTopic('compete');
  const bus = await connect(options);
  const published: string[] = [];
  try {
    await bus.subscribe(topic, 'default');
    for (let first = 0; first < MESSAGES; first += 250) {
      const batch = Array.from({ length: 250 }, (_, n) => ({ payload: { n: first + n } }));
      published.push(...(await bus.publishBatch(topic, batch)));
    }

    const runs = await Promise.all(
      Array.from({ length: WORKERS }, () => workerProcess(topic, env)),
    );
    const perWorker = runs.map((run) => run.ids);

    // The counts first: when a message is missing, they tell where it was left.
    const stats = await bus.stats(topic);
    if (stats[0]?.handled !== MESSAGES) {
      console.error(runs.flatMap((run) => run.warnings).join('\n'));
    }
    expect(stats).toEqual([
      {
        topic,
        group: 'default',
        waiting: 0,
        scheduled: 0,
        inFlight: 0,
        handled: MESSAGES,
        dead: 0,
        quarantined: 0,
        consumers: 0,
      },
    ]);
    const handled = perWorker.flat();
    expect(handled).toHaveLength(MESSAGES);
    expect(new Set(handled).size).toBe(MESSAGES);
    expect([...handled].sort()).toEqual([...published].sort());
    // Each process took a share: the claims really competed.
    expect(perWorker.filter((ids) => ids.length > 0).length).toBeGreaterThan(1);
  } finally {
    await bus.close();
  }
}

describe('four competing worker processes', () => {
  it('handle each of 5,000 Maildir messages exactly once', async () => {
    const url = `maildir:${join(tempDir('compete'), 'queue')}`;
    await compete({ url }, { MAILBUS_URL: url });
  }, 180_000);

  it('handle each of 5,000 Dovecot messages exactly once', async () => {
    await compete(imapOptions(), imapEnv());
  }, 300_000);
});
