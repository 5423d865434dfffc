// What both stores share of a search: checking a query, naming the places it looks in, and
// matching one message text against it (the Maildir store's scan; the IMAP store asks the
// server instead).

import { ERROR_CODES, MailbusError } from '../errors.js';
import { ORIGINAL_ID_HEADER } from '../consumer/dead-letter.js';
import { HEADER } from '../message/headers.js';
import { checkName } from '../names.js';
import { DEFAULT_SEARCH_PAGE, MAX_SEARCH_PAGE, STATE_FOLDERS } from './store.js';
import type { MessageState, PageOptions, SearchQuery } from './store.js';

export const MESSAGE_STATES = Object.keys(STATE_FOLDERS) as MessageState[];

export interface ResolvedPage {
  offset: number;
  limit: number;
}

function invalid(message: string): MailbusError {
  return new MailbusError(ERROR_CODES.INVALID_OPTION, message);
}

/** Checks a query and its page; returns the page with its defaults filled in. */
export function resolveSearch(query: SearchQuery, page: PageOptions = {}): ResolvedPage {
  if (query.topic !== undefined) {
    checkName('topic', query.topic);
  }
  if (query.group !== undefined) {
    checkName('group', query.group);
  }
  for (const state of query.states ?? []) {
    if (!MESSAGE_STATES.includes(state)) {
      throw invalid(`unknown state "${state}": use ${MESSAGE_STATES.join(', ')}`);
    }
  }
  for (const [name, date] of [
    ['since', query.since],
    ['before', query.before],
  ] as const) {
    if (date !== undefined && Number.isNaN(date.getTime())) {
      throw invalid(`search ${name} must be a valid time`);
    }
  }
  if (query.header !== undefined && !/^[A-Za-z0-9][A-Za-z0-9-]{0,75}$/.test(query.header.name)) {
    throw invalid('search header name must be letters, digits and "-"');
  }

  const offset = page.offset ?? 0;
  const limit = page.limit ?? DEFAULT_SEARCH_PAGE;
  if (!Number.isInteger(offset) || offset < 0) {
    throw invalid(`search offset must be a whole number, 0 or more, not ${offset}`);
  }
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_SEARCH_PAGE) {
    throw invalid(`search limit must be a whole number from 1 to ${MAX_SEARCH_PAGE}, not ${limit}`);
  }
  return { offset, limit };
}

/** The states a query looks in. */
export function searchStates(query: SearchQuery): MessageState[] {
  return query.states !== undefined && query.states.length > 0 ? query.states : MESSAGE_STATES;
}

/** Whether a query looks at the text of messages, and not only at where and when they are. */
export function readsText(query: SearchQuery): boolean {
  return (
    query.id !== undefined ||
    query.key !== undefined ||
    query.header !== undefined ||
    query.text !== undefined
  );
}

/** Whether a stored time is inside the query's time range. */
export function inTimeRange(query: SearchQuery, storedAtMs: number): boolean {
  return (
    (query.since === undefined || storedAtMs >= query.since.getTime()) &&
    (query.before === undefined || storedAtMs < query.before.getTime())
  );
}

/**
 * Whether a message text matches the query's id, key, header and text (the place and the time
 * are the caller's). Header values and text compare case-insensitively, as IMAP SEARCH does;
 * the id and key compare exactly. A dead letter matches the id of the message it reports on.
 */
export function matchesText(query: SearchQuery, raw: Buffer): boolean {
  const text = raw.toString('utf8');
  const split = text.search(/\r?\n\r?\n/);
  const fields = headerFields(split === -1 ? text : text.slice(0, split));

  if (query.id !== undefined && !messageIdsOf(raw).includes(query.id)) {
    return false;
  }
  if (query.key !== undefined && !(fields.get(lower(HEADER.key)) ?? []).includes(query.key)) {
    return false;
  }
  if (query.header !== undefined) {
    const wanted = lower(query.header.value);
    const values = fields.get(lower(query.header.name)) ?? [];
    if (!values.some((value) => lower(value).includes(wanted))) {
      return false;
    }
  }
  if (query.text !== undefined) {
    const body = split === -1 ? '' : text.slice(split);
    if (!lower(body).includes(lower(query.text))) {
      return false;
    }
  }
  return true;
}

/** Whether a query's id, key and header can be told from the header block alone. */
export function readsBody(query: SearchQuery): boolean {
  return query.text !== undefined;
}

/**
 * matchesText() for one query, made for a scan of many messages: a message that cannot match
 * is turned down by a byte search before its header is parsed. An id and a key match exactly,
 * so their bytes appear in any text that matches; free text is looked for in the whole
 * lower-cased text first. `raw` may be the header block alone when the query does not read the body.
 */
export function textMatcher(query: SearchQuery): (raw: Buffer) => boolean {
  const id = query.id === undefined ? undefined : Buffer.from(query.id, 'utf8');
  const key = query.key === undefined ? undefined : Buffer.from(query.key, 'utf8');
  const text = query.text === undefined ? undefined : lower(query.text);
  return (raw) => {
    if ((id !== undefined && !raw.includes(id)) || (key !== undefined && !raw.includes(key))) {
      return false;
    }
    // Anywhere in the text first (matchesText then looks in the body only).
    if (text !== undefined && !lower(raw.toString('utf8')).includes(text)) {
      return false;
    }
    return matchesText(query, raw);
  };
}

/** The ids a message is found by: its Message-ID, and for a dead letter the original's. */
export function messageIdsOf(raw: Buffer): string[] {
  const text = raw.toString('utf8');
  const split = text.search(/\r?\n\r?\n/);
  const fields = headerFields(split === -1 ? text : text.slice(0, split));
  return [
    ...(fields.get('message-id') ?? []),
    ...(fields.get(lower(ORIGINAL_ID_HEADER)) ?? []),
  ].map((value) => value.replace(/^<|>$/g, ''));
}

function lower(text: string): string {
  return text.toLowerCase();
}

/** The header block's fields by lower-case name, folded lines joined, values trimmed. */
function headerFields(block: string): Map<string, string[]> {
  const fields = new Map<string, string[]>();
  const unfolded = block.replace(/\r?\n[ \t]+/g, ' ');
  for (const line of unfolded.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) {
      continue;
    }
    const name = lower(line.slice(0, colon).trim());
    fields.set(name, [...(fields.get(name) ?? []), line.slice(colon + 1).trim()]);
  }
  return fields;
}
