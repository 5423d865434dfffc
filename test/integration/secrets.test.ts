// Secrets stay secret: every command runs with a known IMAP password, signing key and
// verification keys, logging at debug level, and not one of them may appear in anything the
// commands print, logs included, or in what a handler command is given.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import type { CliResult } from '../support/cli.js';
import { imapEnv, mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const root = tempDir('secrets');
const SIGNING_SECRET = 'signing-secret-4c1d9e7b2a6f8053';
const OLD_SECRET = 'verify-secret-old-93a7c5e1d2b4f608';
const DASHBOARD_TOKEN = 'dashboard-token-5b8e1f3a9c70d264';

describe('secrets in output and logs', () => {
  it('appear nowhere in what any command prints', async () => {
    const info = mailServers();
    const topic = uniqueTopic('secrets');
    const keyFile = join(root, 'signing.key');
    writeFileSync(keyFile, `k-new:${SIGNING_SECRET}\n`, { mode: 0o600 });
    const env = {
      ...imapEnv(),
      MAILBUS_LOG_LEVEL: 'debug',
      MAILBUS_SIGNING_KEY: `k-new:${SIGNING_SECRET}`,
      MAILBUS_VERIFY_KEYS: `k-old:${OLD_SECRET},k-new:${SIGNING_SECRET}`,
      MAILBUS_DASHBOARD_TOKEN: DASHBOARD_TOKEN,
    };
    const wrongPassword = 'wrong-password-7e2c4a91';
    const secrets = [info.password, SIGNING_SECRET, OLD_SECRET, DASHBOARD_TOKEN, wrongPassword];

    const results: [string, CliResult][] = [];
    const run = async (args: string[], extra: NodeJS.ProcessEnv = {}) => {
      const result = await runCli(args, { env: { ...env, ...extra } });
      results.push([args.join(' '), result]);
      return result;
    };

    expect((await run(['subscribe', topic, 'default'])).code).toBe(0);
    expect((await run(['publish', topic, '{"n":1}'])).code).toBe(0);
    await run(['publish', topic, '{"n":2}', '--signing-key-file', keyFile]);
    await run(['publish', topic, '{"n":3}'], { ...imapEnv(true), MAILBUS_LOG_LEVEL: 'debug' });
    await run(['publish', topic, '{"n":4}'], { MAILBUS_SIGNING_KEY: '' });
    // The handler command prints its whole environment: the keys must not be in it.
    const consumed = await run(['consume', topic, '--verify', '--max', '4', '--exec', 'env']);
    expect(consumed.code).toBe(0);
    expect(consumed.stdout).toContain(`MAILBUS_TOPIC=${topic}`);
    await run(['stats']);
    await run(['stats', topic, '--json']);
    await run(['dlq', topic, 'list']);
    const listed = await run(['quarantine', topic, 'list', '--json']);
    const [entry] = listed.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(entry).toMatchObject({ reason: 'unsigned' });
    await run(['quarantine', topic, 'show', entry.id]);
    await run(['quarantine', topic, 'release', entry.id]);
    await run(['consume', topic, '--verify', '--max', '1', '--log-level', 'trace']);

    // Failures print the URL and the key source, never the secret.
    const url = `imap://${info.user}:${wrongPassword}@${info.host}:${info.imapPort}`;
    const refused = await run(['stats', '--url', url]);
    expect(refused.code).toBe(1);
    await run(['publish', topic, '{}'], { MAILBUS_SIGNING_KEY: `k:${wrongPassword.slice(0, 9)}` });
    await run(['consume', topic, '--verify', '--max', '1'], {
      MAILBUS_VERIFY_KEYS: `bad key:${OLD_SECRET}`,
    });

    expect(results.length).toBeGreaterThan(15);
    for (const [command, result] of results) {
      for (const secret of secrets) {
        const where = `${command}: ${secret.slice(0, 4)}… in its output`;
        expect(result.stdout.includes(secret), where).toBe(false);
        expect(result.stderr.includes(secret), where).toBe(false);
      }
    }
    // The debug log did run: the check above looked at real log lines.
    expect(results.some(([, result]) => result.stderr.includes('"event":"connected"'))).toBe(true);
    // Some twenty command starts, each a few seconds on a busy machine.
  }, 240_000);
});
