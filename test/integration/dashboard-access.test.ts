// Who the dashboard lets in, without a browser: the bind address and token rules at start, the
// loopback Host check that stops DNS rebinding, and the action guard against other sites.

import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { Mailbus } from '../../src/client.js';
import { startDashboard } from '../../src/dashboard/server.js';
import type { Dashboard } from '../../src/dashboard/server.js';
import { silentLogger } from '../../src/log.js';
import { runCli } from '../support/cli.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const url = `maildir:${join(tempDir('board-access'), 'queue')}`;
let bus: Mailbus;
const dashboards: Dashboard[] = [];
afterAll(async () => {
  await Promise.all(dashboards.map((dashboard) => dashboard.close()));
  await bus?.close();
});

/** A request with headers that fetch() does not let a caller set (Host, Origin). */
function send(
  port: number,
  options: { method?: string; path?: string; headers?: Record<string, string>; body?: string },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method: options.method ?? 'GET', path: options.path ?? '/' },
      (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    for (const [name, value] of Object.entries(options.headers ?? {})) {
      req.setHeader(name, value);
    }
    req.on('error', reject);
    req.end(options.body);
  });
}

describe('dashboard access', () => {
  it('refuses to listen off loopback without a token, or with a short one', async () => {
    bus = await connect({ url });
    await expect(
      startDashboard(bus, { host: '0.0.0.0', port: 0, logger: silentLogger }),
    ).rejects.toThrow(
      /will not listen on 0\.0\.0\.0 without an access token: give --token or MAILBUS_DASHBOARD_TOKEN/,
    );
    await expect(
      startDashboard(bus, { host: '0.0.0.0', port: 0, token: 'short', logger: silentLogger }),
    ).rejects.toThrow(/at least 16 characters/);

    const cli = await runCli(['dashboard', '--host', '0.0.0.0', '--port', '0', '--url', url], {
      env: { MAILBUS_DASHBOARD_TOKEN: '' },
    });
    expect(cli.code).toBe(1);
    expect(cli.stderr.trim().split('\n').at(-1)).toMatch(
      /^mailbus: the dashboard will not listen on 0\.0\.0\.0 without an access token/,
    );
  });

  it('on loopback answers loopback host names only, and actions from itself only', async () => {
    const topic = uniqueTopic('access');
    await bus.publish(topic, { n: 1 });
    const dashboard = await startDashboard(bus, { port: 0, logger: silentLogger });
    dashboards.push(dashboard);
    const { port } = dashboard;

    expect((await send(port, { headers: { Host: `127.0.0.1:${port}` } })).status).toBe(200);
    expect((await send(port, { headers: { Host: `localhost:${port}` } })).status).toBe(200);
    const rebound = await send(port, { headers: { Host: `attacker.example:${port}` } });
    expect(rebound.status).toBe(403);

    const pause = (headers: Record<string, string>) =>
      send(port, {
        method: 'POST',
        path: '/api/actions/pause',
        headers: { Host: `127.0.0.1:${port}`, 'Content-Type': 'application/json', ...headers },
        body: JSON.stringify({ topic, group: 'default', paused: true }),
      });
    expect((await pause({})).status).toBe(403);
    const foreign = await pause({ 'X-Mailbus-Action': '1', Origin: 'https://attacker.example' });
    expect(foreign.status).toBe(403);
    expect(await bus.store.isPaused(topic, 'default')).toBe(false);

    const own = await pause({ 'X-Mailbus-Action': '1', Origin: `http://127.0.0.1:${port}` });
    expect(own).toEqual({ status: 200, body: '{"paused":true}' });
    expect(await bus.store.isPaused(topic, 'default')).toBe(true);

    const read = await send(port, {
      path: '/api/actions/pause',
      headers: { Host: `127.0.0.1:${port}` },
    });
    expect(read.status).toBe(405);
  });

  it('answers a malformed action body with 400 and what is wrong, never a 500', async () => {
    const dashboard = await startDashboard(bus, { port: 0, logger: silentLogger });
    dashboards.push(dashboard);
    const { port } = dashboard;
    const action = (path: string, body: string) =>
      send(port, {
        method: 'POST',
        path: `/api/actions/${path}`,
        headers: {
          Host: `127.0.0.1:${port}`,
          'Content-Type': 'application/json',
          'X-Mailbus-Action': '1',
          Origin: `http://127.0.0.1:${port}`,
        },
        body,
      });

    const cases: Array<[string, string, RegExp]> = [
      ['purge', 'null', /bad request: body: /],
      ['requeue', 'null', /bad request: body: /],
      ['replay', '{"topic":"orders","group":"default","ids":"abc"}', /bad request: ids: /],
      ['pause', '{"topic":1,"group":2,"paused":true}', /bad request: topic: .*group: /],
      ['pause', '{not json', /not valid JSON/],
      ['replay', '{"topic":"orders","group":"default"}', /name the dead letters to replay/],
      [
        'pause',
        '{"topic":"nosuch","group":"ghost","paused":true}',
        /topic "nosuch" has no group "ghost"/,
      ],
    ];
    for (const [path, body, error] of cases) {
      const answer = await action(path, body);
      expect([path, body, answer.status]).toEqual([path, body, 400]);
      expect(JSON.parse(answer.body).error).toMatch(error);
    }

    // A search time the calendar does not have is refused, not rolled into the next month.
    const search = await send(port, {
      method: 'GET',
      path: '/api/search?since=2026-02-30',
      headers: { Host: `127.0.0.1:${port}` },
    });
    expect(search.status).toBe(400);
    expect(JSON.parse(search.body).error).toMatch(/since must be an ISO 8601 date .*"2026-02-30"/);
  });
});
