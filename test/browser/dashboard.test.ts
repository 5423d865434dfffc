// The dashboard in a real headless Chromium (Debian's, driven by playwright-core), against a
// queue on a Maildir and on Dovecot: after a known workload the overview shows the right counts,
// the search bar finds the right messages, a dead letter replayed from its page is handled
// afterwards, and requests without the token are refused. Then the newcomer's path, all through
// the command line: the demo that `npm start` runs, `mailbus dashboard`, the demo's queue in the
// page, a rejected order found by the search bar, replayed, and handled by `mailbus consume`.
// Screenshots of the main pages go to test-artifacts/screenshots/.

import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { ConnectOptions, Mailbus } from '../../src/client.js';
import { DeadLetterError } from '../../src/consumer/errors.js';
import { startDashboard } from '../../src/dashboard/server.js';
import type { Dashboard } from '../../src/dashboard/server.js';
import { silentLogger } from '../../src/log.js';
import type { Claimer } from '../../src/store/store.js';
import { CLI, runCli } from '../support/cli.js';
import { imapOptions } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const CHROMIUM = '/usr/bin/chromium';
const INSTALL = fileURLToPath(new URL('./install-chromium.sh', import.meta.url));
const SCREENSHOTS = fileURLToPath(new URL('../../test-artifacts/screenshots/', import.meta.url));
const TOKEN = 'a-test-token-of-enough-length';

// Without the background-networking switches Chromium waits on services it cannot reach on a
// machine without internet access.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let context: BrowserContext;
let profile: string;

beforeAll(async () => {
  execFileSync('bash', [INSTALL], { stdio: 'inherit' });
  mkdirSync(SCREENSHOTS, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), 'mailbus-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 860 },
  });
}, 600_000);

afterAll(async () => {
  await context?.close();
  if (profile !== undefined) {
    rmSync(profile, { recursive: true, force: true });
  }
});

/** Waits for the cell of one count of a group in the overview to show `value`. */
async function expectCount(page: Page, group: string, count: string, value: number) {
  const cell = page.locator(`tr[data-group="${group}"] td[data-count="${count}"]`);
  await expect.poll(() => cell.textContent(), { timeout: 15_000 }).toBe(String(value));
}

function describeDashboard(name: string, options: () => ConnectOptions): void {
  describe(`the dashboard on ${name}`, () => {
    let bus: Mailbus;
    let dashboard: Dashboard;
    let page: Page;
    let watcher: Claimer | undefined;
    const topic = uniqueTopic('board');
    const ids: string[] = [];

    beforeAll(async () => {
      bus = await connect(options());
      dashboard = await startDashboard(bus, {
        port: 0,
        token: TOKEN,
        logger: silentLogger,
        sampleIntervalMs: 300,
      });

      // The workload: 5 messages to two groups; in `default` 4 are handled and the poisoned
      // one is dead-lettered; `billing` has not consumed anything.
      await bus.subscribe(topic, 'default');
      await bus.subscribe(topic, 'billing');
      for (let n = 1; n <= 5; n += 1) {
        const poisoned = n === 5;
        const payload = { n, sku: `sku-${n}`, note: poisoned ? 'poisoned needle' : 'fine' };
        ids.push(await bus.publish(topic, payload, { key: `customer-${n % 2}` }));
      }
      const worker = bus.consume(
        topic,
        (message) => {
          if ((message.payload as { note: string }).note.includes('poisoned')) {
            throw new DeadLetterError('poisoned on purpose');
          }
        },
        { maxMessages: 5 },
      );
      expect(await worker.done).toMatchObject({ handled: 4, deadLettered: 1 });
      // A consumer of `billing` that claims nothing, only says it is alive.
      watcher = await bus.store.claimer(topic, 'billing', { consumer: 'watcher' });
      await watcher.heartbeat();
      // Cookies are kept per host name, not per port: no session from another dashboard.
      await context.clearCookies();
      page = await context.newPage();
    }, 120_000);

    afterAll(async () => {
      await page?.close();
      await watcher?.close();
      await dashboard?.close();
      await bus?.close();
    });

    it('refuses requests without the token', async () => {
      const overview = await fetch(`${dashboard.url}api/overview`);
      expect(overview.status).toBe(401);
      const html = await fetch(dashboard.url, { headers: { Accept: 'text/html' } });
      expect(html.status).toBe(401);
      expect(await html.text()).not.toContain(TOKEN);
      const action = await fetch(`${dashboard.url}api/actions/purge`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Mailbus-Action': '1' },
        body: JSON.stringify({ topic, group: 'default' }),
      });
      expect(action.status).toBe(401);

      // With the token but without the action header (a form another site could post): refused.
      const forged = await fetch(`${dashboard.url}api/actions/purge`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ topic, group: 'default' }),
      });
      expect(forged.status).toBe(403);
      expect((await bus.stats(topic)).find((row) => row.group === 'default')?.dead).toBe(1);

      // The browser is shown the sign-in form, with status 401, and a wrong token is refused.
      const response = await page.goto(dashboard.url);
      expect(response?.status()).toBe(401);
      await page.fill('#token', 'not-the-right-token-at-all');
      await page.click('button[type=submit]');
      await expect.poll(() => page.locator('.hint.error').count()).toBe(1);
    });

    it('shows the right counts after signing in', async () => {
      await page.goto(dashboard.url);
      await page.fill('#token', TOKEN);
      await page.click('button[type=submit]');
      await page.waitForSelector('#groups');
      expect(page.url()).toBe(dashboard.url); // no secret in the address

      await expectCount(page, `${topic}/default`, 'waiting', 0);
      await expectCount(page, `${topic}/default`, 'handled', 4);
      await expectCount(page, `${topic}/default`, 'dead', 1);
      await expectCount(page, `${topic}/billing`, 'waiting', 5);
      await expectCount(page, `${topic}/billing`, 'dead', 0);
      // The worker of `default` has stopped; a consumer of `billing` that is alive shows.
      await expectCount(page, `${topic}/default`, 'consumers', 0);
      await expectCount(page, `${topic}/billing`, 'consumers', 1);
      expect(await page.content()).not.toContain(TOKEN);
      await page.screenshot({ path: join(SCREENSHOTS, `${name}-overview.png`), fullPage: true });

      // On a phone, in dark mode: the same counts, nothing wider than the screen.
      await page.setViewportSize({ width: 390, height: 844 });
      await page.emulateMedia({ colorScheme: 'dark' });
      const overflow = await page
        .locator('body')
        .evaluate((body) => body.scrollWidth - body.clientWidth);
      expect(overflow).toBeLessThanOrEqual(0);
      await expectCount(page, `${topic}/default`, 'dead', 1);
      await page.screenshot({ path: join(SCREENSHOTS, `${name}-phone-dark.png`), fullPage: true });
      await page.setViewportSize({ width: 1280, height: 860 });
      await page.emulateMedia({ colorScheme: 'light' });
    });

    it('finds messages through the search bar', async () => {
      await page.fill('#search-input', `needle topic:${topic}`);
      await page.press('#search-input', 'Enter');
      await page.waitForSelector('#search-total');
      expect(await page.textContent('#search-total')).toMatch(/^2 messages match/);
      const rows = page.locator('#results tbody tr');
      expect(
        await rows.evaluateAll((all) => all.map((row) => row.getAttribute('data-id'))),
      ).toEqual([ids[4], ids[4]]);
      const states = await page.locator('#results tbody tr .badge').allTextContents();
      expect(states.sort()).toEqual(['dead', 'waiting']);

      await page.fill('#search-input', `key:customer-1 group:billing topic:${topic}`);
      await page.press('#search-input', 'Enter');
      await expect.poll(() => page.textContent('#search-total')).toMatch(/^3 messages match/);
      const keyed = await page
        .locator('#results tbody tr')
        .evaluateAll((all) => all.map((row) => row.getAttribute('data-id')));
      expect(keyed).toEqual([ids[4], ids[2], ids[0]]);

      // A dead letter is found by its original's key.
      await page.fill('#search-input', `key:customer-1 state:dead topic:${topic}`);
      await page.press('#search-input', 'Enter');
      await expect.poll(() => page.textContent('#search-total')).toMatch(/^1 message matches/);
      expect(await page.getAttribute('#results tbody tr', 'data-id')).toBe(ids[4]);

      // A time range from the URL stays in the form, and a search from the form keeps it.
      const since = new Date(Date.now() - 3_600_000);
      await page.goto(`${dashboard.url}#/search?topic=${topic}&since=${since.toISOString()}`);
      await page.waitForSelector('#search-total');
      expect(await page.inputValue('#search-form input[name=since]')).not.toBe('');
      await page.selectOption('#search-form select[name=state]', 'dead');
      await page.click('#search-form button[type=submit]');
      await expect.poll(() => page.url()).toContain('state=dead');
      const kept = new URLSearchParams(page.url().split('?')[1]).get('since');
      expect(Date.parse(kept ?? '')).toBe(Math.floor(since.getTime() / 1000) * 1000);
      await expect.poll(() => page.textContent('#search-total')).toMatch(/^1 message matches/);
      await page.screenshot({ path: join(SCREENSHOTS, `${name}-search.png`), fullPage: true });
    });

    it('replays a dead letter from its page, and a worker then handles it', async () => {
      await page.goto(`${dashboard.url}#/search?topic=${topic}&group=default&state=dead`);
      await page.click(`#results tr[data-id="${ids[4]}"] a`);
      await page.waitForSelector('#payload');
      expect(JSON.parse((await page.textContent('#payload')) ?? '')).toEqual({
        n: 5,
        sku: 'sku-5',
        note: 'poisoned needle',
      });
      await page.screenshot({ path: join(SCREENSHOTS, `${name}-message.png`), fullPage: true });
      expect(await page.textContent('main')).toContain('poisoned on purpose');

      await page.click('#replay-one');
      await page.click('#confirm-ok');
      await expect.poll(() => page.url()).toContain('state=waiting');
      await page.waitForSelector('#payload');

      const worker = bus.consume(topic, () => undefined, { maxMessages: 1 });
      expect(await worker.done).toMatchObject({ handled: 1, deadLettered: 0 });
      await page.goto(dashboard.url);
      await expectCount(page, `${topic}/default`, 'handled', 5);
      await expectCount(page, `${topic}/default`, 'dead', 0);
      expect(await page.textContent('main')).toMatch(/replay .*\/default \(1\) by anonymous/);
    });
  });
}

describeDashboard('maildir', () => ({ url: `maildir:${join(tempDir('board'), 'queue')}` }));
describeDashboard('dovecot', () => imapOptions());

describe('the newcomer path: npm start, then mailbus dashboard', () => {
  const dir = tempDir('newcomer');
  const demoUrl = 'maildir:./mailbus-data'; // the default, relative to where the commands run
  let dashboard: ReturnType<typeof spawn> | undefined;
  let url = '';
  let page: Page;

  beforeAll(async () => {
    // What `npm start` runs once the build is done, in a directory of its own.
    const start = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'))
      .scripts.start as string;
    expect(start).toBe('npm run build --silent && node dist/cli/main.js demo');
    const demo = await runCli(['demo', '--count', '300'], { cwd: dir, timeoutMs: 120_000 });
    expect(demo.code).toBe(0);
    expect(demo.stdout).toContain('every group handled every event.');
    expect(demo.stdout).toContain('npx mailbus dashboard');
    expect(demo.stdout).toContain('npx mailbus consume order-created --group order-service');

    dashboard = spawn(process.execPath, [CLI, 'dashboard', '--port', '0'], {
      cwd: dir,
      env: { ...process.env, MAILBUS_URL: demoUrl, MAILBUS_DASHBOARD_TOKEN: '' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    url = await new Promise<string>((resolve, reject) => {
      dashboard?.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk.toString('utf8');
        const match = /^mailbus: dashboard at (http:\/\/127\.0\.0\.1:\d+\/)$/m.exec(stderr);
        if (match) {
          resolve(match[1] as string);
        }
      });
      dashboard?.on('exit', (code) => reject(new Error(`dashboard exited ${code}: ${stderr}`)));
    });
    await context.clearCookies();
    page = await context.newPage();
  }, 180_000);

  afterAll(async () => {
    await page?.close();
    if (dashboard && dashboard.exitCode === null) {
      const exited = new Promise((resolve) => dashboard?.once('exit', resolve));
      dashboard.kill('SIGTERM');
      await exited;
    }
  });

  it('shows the demo topics and groups, with its rejected orders as dead letters', async () => {
    // On loopback no token is asked for: the page opens at once.
    await page.goto(url);
    await page.waitForSelector('#groups');
    const groups = await page
      .locator('#groups tbody tr')
      .evaluateAll((rows) => rows.map((row) => row.getAttribute('data-group')));
    const topics = ['inventory-update', 'order-created', 'payment-processed'];
    const demoGroups = ['analytics', 'audit-log', 'order-service'];
    expect(groups).toEqual(topics.flatMap((t) => demoGroups.map((g) => `${t}/${g}`)));
    await expectCount(page, 'order-created/order-service', 'dead', 3);
    await expectCount(page, 'order-created/order-service', 'handled', 100);
    await expectCount(page, 'order-created/analytics', 'waiting', 3);
    await expectCount(page, 'payment-processed/audit-log', 'handled', 100);
    await expectCount(page, 'order-created/order-service', 'consumers', 0);
  });

  it('finds a rejected order through the search bar, replays it, and a consumer handles it', async () => {
    await page.fill('#search-input', '99001 state:dead');
    await page.press('#search-input', 'Enter');
    await expect.poll(() => page.textContent('#search-total')).toMatch(/^1 message(s)? match/);
    await page.click('#results tbody tr a');
    await page.waitForSelector('#payload');
    expect(JSON.parse((await page.textContent('#payload')) ?? '')).toMatchObject({
      orderId: 99_001,
      total: -1,
    });
    expect(await page.textContent('main')).toContain('order total -1 is below zero');

    await page.click('#replay-one');
    await page.click('#confirm-ok');
    await expect.poll(() => page.url()).toContain('state=waiting');
    await page.waitForSelector('#payload');
    // Nothing consumes the group now: the page says so, and how to start a consumer.
    const command = 'npx mailbus consume order-created --group order-service --max 1';
    expect(await page.textContent('#no-consumer')).toContain(command);
    await page.screenshot({ path: join(SCREENSHOTS, 'newcomer-replayed.png'), fullPage: true });

    const consumed = await runCli(command.split(' ').slice(2), {
      cwd: dir,
      env: { MAILBUS_URL: demoUrl },
    });
    expect(consumed.code).toBe(0);
    expect(JSON.parse(consumed.stdout)).toMatchObject({
      topic: 'order-created',
      group: 'order-service',
      payload: { orderId: 99_001 },
    });
    await page.goto(url);
    await expectCount(page, 'order-created/order-service', 'handled', 101);
    await expectCount(page, 'order-created/order-service', 'dead', 2);
    expect(await page.textContent('main')).toMatch(/replay order-created\/order-service \(1\)/);
  });
});
