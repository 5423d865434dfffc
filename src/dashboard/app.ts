// The dashboard's routes: the page and its assets, a JSON API that the page reads, a stream of
// throughput samples (server-sent events), /metrics, and the actions. Every action is a POST
// behind the action guard (access.ts) and is logged with who did it.

import { parseIsoTime } from '../time.js';
import { readFileSync } from 'node:fs';
import { getConnInfo } from '@hono/node-server/conninfo';
import { Hono } from 'hono';
import type { Context } from 'hono';
import { setCookie } from 'hono/cookie';
import { secureHeaders } from 'hono/secure-headers';
import { streamSSE } from 'hono/streaming';
import { z } from 'zod';
import { DeadLetters } from '../admin/dead-letters.js';
import { findMessage, moveToWaiting, viewMessage } from '../admin/messages.js';
import type { Mailbus } from '../client.js';
import { ERROR_CODES, MailbusError, isMailbusError } from '../errors.js';
import type { Logger } from '../log.js';
import type { QueueMetrics } from '../metrics/metrics.js';
import { metricsRoute } from '../metrics/server.js';
import { checkName } from '../names.js';
import { MESSAGE_STATES } from '../store/search.js';
import type { MessageState, SearchQuery } from '../store/store.js';
import { SESSION_COOKIE, accessGate, actionGuard, sessionValue, tokenMatches } from './access.js';
import type { Throughput } from './throughput.js';

export interface DashboardContext {
  bus: Mailbus;
  metrics: QueueMetrics;
  throughput: Throughput;
  token: string | undefined;
  logger: Logger;
}

/** Thread neighbours shown on a message page: the nearest messages of the same key. */
const THREAD_NEIGHBOURS = 20;

/** Actions kept for the overview's list of recent actions. */
const RECENT_ACTIONS = 50;

const ASSETS_DIR = new URL('../../src/dashboard/assets/', import.meta.url);

const ASSET_TYPES: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
  'favicon.svg': 'image/svg+xml',
};

function asset(name: string): string {
  return readFileSync(new URL(name, ASSETS_DIR), 'utf8');
}

interface ActionRecord {
  at: string;
  action: string;
  topic: string;
  group: string;
  count: number;
  by: string;
}

export function dashboardApp(context: DashboardContext): Hono {
  const { bus, throughput, token, logger } = context;
  const log = logger.child({ sub: 'dashboard' });
  const assets = new Map(Object.keys(ASSET_TYPES).map((name) => [name, asset(name)]));
  const page = asset('index.html');
  const signInPage = asset('sign-in.html');
  const recent: ActionRecord[] = [];

  const app = new Hono();
  app.use(
    secureHeaders({
      contentSecurityPolicy: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        connectSrc: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
      },
      // Not no-referrer: with it, Chromium sends `Origin: null`, and the origin check needs it.
      referrerPolicy: 'same-origin',
      // Served over plain HTTP on loopback; a proxy that adds TLS sets its own HSTS.
      strictTransportSecurity: false,
    }),
  );
  app.use(
    accessGate({
      token,
      // The sign-in form, and the two files its page shows; they hold nothing of the queue.
      open: ['/sign-in', '/assets/style.css', '/assets/favicon.svg'],
      signIn: (c) => c.html(signInPage, 401),
    }),
  );

  // Signing in: the token comes in a form body (never in a URL) and leaves as a cookie that
  // holds a digest of it.
  app.post('/sign-in', async (c) => {
    const origin = c.req.header('Origin');
    const host = c.req.header('Host');
    if (origin !== undefined && origin !== `http://${host}` && origin !== `https://${host}`) {
      return c.text('signing in must come from the dashboard itself', 403);
    }
    const form = await c.req.parseBody();
    const given = typeof form.token === 'string' ? form.token : undefined;
    if (token === undefined) {
      return c.redirect('/', 303);
    }
    if (!tokenMatches(given, token)) {
      log.warn({ event: 'dashboard.sign_in_refused', from: remote(c) });
      return c.html(signInPage.replace('<p class="hint">', '<p class="hint error">'), 401);
    }
    setCookie(c, SESSION_COOKIE, sessionValue(token), {
      httpOnly: true,
      sameSite: 'Strict',
      path: '/',
      secure: new URL(c.req.url).protocol === 'https:',
    });
    log.info({ event: 'dashboard.signed_in', from: remote(c) });
    return c.redirect('/', 303);
  });

  app.get('/', (c) => c.html(page));
  app.get('/assets/:name', (c) => {
    const name = c.req.param('name');
    const body = assets.get(name);
    if (body === undefined) {
      return c.notFound();
    }
    return c.body(body, 200, { 'Content-Type': ASSET_TYPES[name] as string });
  });
  metricsRoute(app, context.metrics);

  app.get('/api/overview', async (c) => {
    const sample = throughput.latest() ?? (await throughput.refresh(), throughput.latest());
    return c.json({
      location: bus.store.location,
      kind: bus.store.kind,
      sample: sample ?? null,
      history: throughput.history(),
      actions: recent,
    });
  });

  app.get('/api/events', (c) =>
    streamSSE(c, async (stream) => {
      const send = (sample: unknown): void =>
        void stream.writeSSE({ event: 'sample', data: JSON.stringify(sample) });
      throughput.on('sample', send);
      stream.onAbort(() => {
        throughput.off('sample', send);
      });
      // Held open until the page goes away or the dashboard stops.
      await new Promise<void>((resolve) => stream.onAbort(resolve));
    }),
  );

  app.get('/api/search', async (c) => {
    const query = searchQuery(c);
    const offset = Number(c.req.query('offset') ?? 0);
    const limit = Number(c.req.query('limit') ?? 25);
    const page = await bus.store.search(query, { offset, limit });
    const hits = await Promise.all(page.hits.map((hit) => viewMessage(hit)));
    return c.json({ total: page.total, offset, limit, hits: hits.map(summary) });
  });

  app.get('/api/message', async (c) => {
    const where = messageAddress(c);
    const view = await viewMessage(await findMessage(bus.store, where));
    let thread: unknown[] = [];
    if (view.key !== undefined) {
      const query = { topic: where.topic, group: where.group, key: view.key };
      const page = await bus.store.search(query, { limit: THREAD_NEIGHBOURS });
      const views = await Promise.all(page.hits.map((hit) => viewMessage(hit)));
      // A dead letter's report carries no key of its own: it is placed among its neighbours.
      if (!views.some((neighbour) => neighbour.id === view.id)) {
        views.push(view);
      }
      views.sort((a, b) => a.storedAt.getTime() - b.storedAt.getTime());
      thread = views.map(summary);
    }
    // A waiting message with no consumer to take it waits for good: the page says so.
    const stats = await bus.stats(where.topic);
    const consumers = stats.find((group) => group.group === where.group)?.consumers ?? 0;
    return c.json({
      message: { ...view, storedAt: view.storedAt.toISOString() },
      thread,
      consumers,
    });
  });

  // Actions.
  const actions = new Hono();
  actions.use(actionGuard);
  const record = async (c: Context, action: string, topic: string, group: string, count = 1) => {
    const by = actor(c);
    log.info({ event: `dashboard.${action}`, topic, group, count, by });
    recent.unshift({ at: new Date().toISOString(), action, topic, group, count, by });
    recent.splice(RECENT_ACTIONS);
    await throughput.refresh();
  };

  actions.post('/replay', async (c) => {
    const body = bodyOf(REPLAY_BODY, await c.req.json());
    const { topic, group } = place(body);
    if (body.all !== true && (body.ids ?? []).length === 0) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        'bad request: name the dead letters to replay in ids, or set all to true',
      );
    }
    const ids = body.all === true ? 'all' : (body.ids ?? []);
    const count = await new DeadLetters(bus.store, topic, group).replay(ids);
    await record(c, 'replay', topic, group, count);
    return c.json({ replayed: count });
  });
  actions.post('/purge', async (c) => {
    const { topic, group } = place(bodyOf(PLACE_BODY, await c.req.json()));
    const count = await new DeadLetters(bus.store, topic, group).purge();
    await record(c, 'purge', topic, group, count);
    return c.json({ purged: count });
  });
  actions.post('/requeue', async (c) => {
    const body = bodyOf(REQUEUE_BODY, await c.req.json());
    const where = { ...place(body), state: state(body.state), id: body.id };
    await moveToWaiting(bus.store, await findMessage(bus.store, where));
    await record(c, 'requeue', where.topic, where.group);
    return c.json({ requeued: 1 });
  });
  actions.post('/pause', async (c) => {
    const body = bodyOf(PAUSE_BODY, await c.req.json());
    const { topic, group } = place(body);
    // A pause of a group nobody subscribed yet would wait, unseen, for the group to be made.
    if (!(await bus.store.listGroups(topic)).includes(group)) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        `topic "${topic}" has no group "${group}" to pause or resume`,
      );
    }
    await bus.store.setPaused(topic, group, body.paused);
    await record(c, body.paused ? 'pause' : 'resume', topic, group);
    return c.json({ paused: body.paused });
  });
  app.route('/api/actions', actions);

  app.onError((err, c) => {
    if (isMailbusError(err)) {
      return c.json({ error: err.message }, 400);
    }
    if (err instanceof SyntaxError) {
      return c.json({ error: 'the request body is not valid JSON' }, 400);
    }
    log.error({ event: 'dashboard.error', path: c.req.path, err: err.message });
    return c.json({ error: 'the dashboard failed; its log has the details' }, 500);
  });
  return app;
}

// The bodies the actions take: anything else is refused with what is wrong, never a 500.
const PLACE_BODY = z.object({ topic: z.string(), group: z.string() });
const REPLAY_BODY = PLACE_BODY.extend({
  ids: z.array(z.string()).optional(),
  all: z.boolean().optional(),
});
const REQUEUE_BODY = PLACE_BODY.extend({ state: z.string(), id: z.string() });
const PAUSE_BODY = PLACE_BODY.extend({ paused: z.boolean() });

function bodyOf<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.join('.') || 'body'}: ${issue.message}`,
    );
    throw new MailbusError(ERROR_CODES.INVALID_OPTION, `bad request: ${problems.join('; ')}`);
  }
  return parsed.data;
}

function place(body: { topic: string; group: string }): { topic: string; group: string } {
  return { topic: checkName('topic', body.topic), group: checkName('group', body.group) };
}

function state(value: unknown): MessageState {
  const text = String(value ?? '');
  if (!(MESSAGE_STATES as string[]).includes(text)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `unknown state "${text}": use ${MESSAGE_STATES.join(', ')}`,
    );
  }
  return text as MessageState;
}

function messageAddress(c: Context) {
  return {
    ...place({ topic: c.req.query('topic') ?? '', group: c.req.query('group') ?? '' }),
    state: state(c.req.query('state')),
    id: c.req.query('id') ?? '',
  };
}

/** The search bar's fields, as the page sends them. */
function searchQuery(c: Context): SearchQuery {
  const text = (name: string): string | undefined => {
    const value = c.req.query(name)?.trim();
    return value === undefined || value === '' ? undefined : value;
  };
  const time = (name: string): Date | undefined => {
    const value = text(name);
    const parsed = value === undefined ? undefined : parseIsoTime(value);
    if (value !== undefined && parsed === undefined) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        `${name} must be an ISO 8601 date or time such as 2026-12-24T18:00:00Z, not "${value}"`,
      );
    }
    return parsed;
  };
  const header = text('header');
  const colon = header?.indexOf(':') ?? -1;
  const stateName = text('state');
  return {
    topic: text('topic'),
    group: text('group'),
    states: stateName === undefined ? undefined : [stateName as MessageState],
    id: text('id'),
    key: text('key'),
    header:
      header === undefined || colon <= 0
        ? undefined
        : { name: header.slice(0, colon).trim(), value: header.slice(colon + 1).trim() },
    text: text('text'),
    since: time('since'),
    before: time('before'),
  };
}

/** What a list shows of a message. */
function summary(view: Awaited<ReturnType<typeof viewMessage>>) {
  const { id, topic, group, state, key, attempts, subject, location } = view;
  const preview = JSON.stringify(view.payload)?.slice(0, 120) ?? '';
  return {
    id,
    topic,
    group,
    state,
    key,
    attempts,
    subject,
    location,
    storedAt: view.storedAt.toISOString(),
    preview,
  };
}

function remote(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Who did an action, for the log: the name the operator gave the page (not verified: the
 * token is what grants access) and where the request came from.
 */
function actor(c: Context): string {
  const name = (c.req.header('X-Mailbus-Operator') ?? '').replace(/[^\w .@-]/g, '').slice(0, 64);
  return `${name || 'anonymous'} from ${remote(c)}`;
}
