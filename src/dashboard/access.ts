// Who may use the dashboard, and how actions are kept safe from other web sites.
//
// - Bound to a loopback address it needs no token, but it answers only requests whose Host is
//   a loopback name, so that a web page cannot reach it through a DNS name that resolves to
//   127.0.0.1 (DNS rebinding).
// - Bound anywhere else it refuses to start without an access token. Every request must then
//   carry it: as `Authorization: Bearer <token>` (scripts), or as the session cookie that the
//   sign-in form sets (browsers). The cookie holds an HMAC of the token, never the token, and
//   is HttpOnly and SameSite=Strict. Without either, the answer is 401.
// - Actions are POSTs that must carry `X-Mailbus-Action: 1` and, when the browser sends an
//   Origin, one equal to the dashboard's own. Another site cannot add such a header to a
//   cross-origin request without a CORS preflight, which the dashboard never grants.
// - The token never appears in a page, a URL the dashboard builds, or a log line.

import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { getCookie } from 'hono/cookie';
import { ERROR_CODES, MailbusError } from '../errors.js';

export const SESSION_COOKIE = 'mailbus_session';
export const ACTION_HEADER = 'X-Mailbus-Action';

/** Shorter tokens are refused: the token is the only lock on a dashboard off loopback. */
export const MIN_TOKEN_LENGTH = 16;

const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

export function isLoopback(host: string): boolean {
  return LOOPBACK_NAMES.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Checks the bind address and token together; returns the token to require, if any. */
export function checkAccess(host: string, token: string | undefined): string | undefined {
  const given = token === '' ? undefined : token;
  if (given === undefined && !isLoopback(host)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `the dashboard will not listen on ${host} without an access token: give --token or ` +
        'MAILBUS_DASHBOARD_TOKEN, or listen on 127.0.0.1',
    );
  }
  if (given !== undefined && given.length < MIN_TOKEN_LENGTH) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `the dashboard access token must be at least ${MIN_TOKEN_LENGTH} characters long`,
    );
  }
  return given;
}

/** The session cookie's value for a token: a keyed digest, so the cookie is not the token. */
export function sessionValue(token: string): string {
  return createHmac('sha256', token).update('mailbus dashboard session').digest('base64url');
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function tokenMatches(given: string | undefined, token: string): boolean {
  return given !== undefined && sameSecret(given, token);
}

/** Whether a request carries the token, by header or by session cookie. */
export function authorised(c: Context, token: string): boolean {
  const header = c.req.header('Authorization');
  if (header?.startsWith('Bearer ') && tokenMatches(header.slice('Bearer '.length), token)) {
    return true;
  }
  const cookie = getCookie(c, SESSION_COOKIE);
  return cookie !== undefined && sameSecret(cookie, sessionValue(token));
}

/** Host-name part of a Host header: `127.0.0.1:8025` → `127.0.0.1`, `[::1]:80` → `[::1]`. */
function hostName(hostHeader: string): string {
  return hostHeader.startsWith('[')
    ? hostHeader.slice(0, hostHeader.indexOf(']') + 1)
    : hostHeader.replace(/:\d+$/, '');
}

/**
 * The gate in front of every route. `signIn` answers a request without the token (the sign-in
 * page, with status 401) and `open` lists the paths reachable without it (the sign-in POST).
 */
export function accessGate(options: {
  token: string | undefined;
  open: string[];
  signIn: (c: Context) => Response | Promise<Response>;
}): MiddlewareHandler {
  return async (c, next) => {
    if (options.token === undefined) {
      const host = c.req.header('Host') ?? '';
      if (!isLoopback(hostName(host))) {
        return c.text('this dashboard answers on its loopback address only', 403);
      }
    } else if (!options.open.includes(c.req.path) && !authorised(c, options.token)) {
      const wantsPage = c.req.method === 'GET' && (c.req.header('Accept') ?? '').includes('html');
      if (wantsPage) {
        return options.signIn(c);
      }
      return c.json({ error: 'this dashboard needs its access token' }, 401);
    }
    await next();
  };
}

/** Refuses a POST that a page of another site could have sent. */
export const actionGuard: MiddlewareHandler = async (c, next) => {
  if (c.req.method !== 'POST') {
    return c.json({ error: 'actions are POST requests' }, 405);
  }
  if (c.req.header(ACTION_HEADER) !== '1') {
    return c.json({ error: `an action needs the ${ACTION_HEADER}: 1 header` }, 403);
  }
  const origin = c.req.header('Origin');
  const host = c.req.header('Host');
  if (origin !== undefined && origin !== `http://${host}` && origin !== `https://${host}`) {
    return c.json({ error: 'an action must come from the dashboard itself' }, 403);
  }
  await next();
};
