// Search on an IMAP server: each mailbox of the query's places answers one UID SORT (ARRIVAL),
// which hands over its matching UIDs already in INTERNALDATE order as a compact UID set; only
// the dates needed to merge a page across mailboxes and only the page's texts are fetched.
//
// Order: newest first by INTERNALDATE, then by UID, as the Maildir orders by stored time. A
// sort's ties (messages of one second) are in UID order, so a mailbox's newest are the end of
// its ARRIVAL order read backwards; REVERSE ARRIVAL would keep ties in UID order and put the
// oldest of the newest second first.
//
// Free text is read here: Dovecot's SEARCH BODY (without a full-text index) looks in text/*
// parts only, never in an application/json payload. So the server narrows by everything else,
// and the bodies of what is left stream through one FETCH at a time, one body held at once.

import type { ImapAttribute, ImapFlow } from 'imapflow';
import { ORIGINAL_ID_HEADER } from '../../consumer/dead-letter.js';
import { HEADER } from '../../message/headers.js';
import { matchesText } from '../search.js';
import type { ResolvedPage } from '../search.js';
import type { MessageState, SearchHit, SearchPage, SearchQuery } from '../store.js';
import {
  allUidsByArrival,
  charsetOf,
  formatSearchDate,
  formatUidSet,
  internalDateMs,
  mailboxStatus,
  searchAllUids,
  selectIfExists,
  streamBodies,
} from './commands.js';

/** A mailbox to search, and what a hit found there is. */
export interface SearchedMailbox {
  mailbox: string;
  topic: string;
  group: string;
  state: MessageState;
  /** Prefixes the UID in a hit's ref (in-flight refs name the consumer). */
  refPrefix: string;
  /** Separates the mailbox and the UID in a hit's location. */
  separator: string;
}

/**
 * UIDs one FETCH names: Dovecot refuses a command line over 64 KiB (imap_max_line_length), and
 * a scattered UID set takes about 7 characters a UID.
 */
const FETCH_BATCH_MAX_MESSAGES = 5_000;

/**
 * Up to this many of a mailbox's newest offset + limit have their dates read while it is
 * selected for its search (all of a small mailbox's), so merging the page selects it not again.
 */
const EAGER_DATES_MAX_MESSAGES = 1_000;

/**
 * A page this shallow (offset + limit) has the texts of the newest of the mailbox selected
 * before the search read first, while it is still selected: Dovecot reads a Maildir's list of
 * 100,000 files again (about 0.25 s) the first time a text is read after each SELECT.
 */
const EAGER_TEXTS_MAX_MESSAGES = 100;

/**
 * A mailbox too large for its dates to be read for a deep page has the dates of this many of its
 * matches read instead, evenly spread: they bound where the page can start in it.
 */
const SAMPLED_DATES = 256;

/** Windows of a page this large in all are narrowed by the sampled dates before being read. */
const WINDOWS_MAX_MESSAGES = 5_000;

/** Dates one round of the search for a time range's edge reads, spread over what is left. */
const EDGE_PROBES = 64;

/**
 * How much wider than the query the server's time criteria are: SINCE and BEFORE compare whole
 * days in a zone the server picks, and WITHIN counts from the server's clock, which may be off
 * from ours. The edges are then found exactly from dates.
 */
const SEARCH_DATE_MARGIN_MS = 86_400_000;

/** One mailbox's matches, in ARRIVAL order (oldest first), and the dates read so far. */
interface Matches {
  source: SearchedMailbox;
  /** The place of this mailbox among the searched ones: orders ties across mailboxes. */
  order: number;
  uids: number[];
  dates: Map<number, number>;
}

interface Candidate {
  source: SearchedMailbox;
  uid: number;
}

/** Message texts read, by mailbox and UID (textKey). */
type Texts = Map<string, { raw: Buffer; storedAt: Date }>;

/**
 * The SORT criteria of a query. The place is the mailbox. The time is a superset, made exact by
 * the dates of the edges: with WITHIN (RFC 5032) `YOUNGER`/`OLDER` seconds from the server's
 * now, which Dovecot compares from its index (SINCE and BEFORE, in whole days, took it 0.5 s
 * more for 100,000 messages); the range a day wider either way.
 */
export function searchCriteria(
  query: SearchQuery,
  within: boolean,
  nowMs: number,
): ImapAttribute[] {
  const criteria: ImapAttribute[] = [atom('UNDELETED')];
  if (query.key !== undefined) {
    criteria.push(atom('HEADER'), atom(HEADER.key), quoted(query.key));
  }
  if (query.header !== undefined) {
    criteria.push(atom('HEADER'), atom(query.header.name), quoted(query.header.value));
  }
  if (query.id !== undefined) {
    // A dead letter is found by the id of the message it reports on.
    criteria.push(
      atom('OR'),
      [atom('HEADER'), atom('Message-ID'), quoted(query.id)],
      [atom('HEADER'), atom(ORIGINAL_ID_HEADER), quoted(query.id)],
    );
  }

  const since = query.since && query.since.getTime() - SEARCH_DATE_MARGIN_MS;
  const before = query.before && query.before.getTime() + SEARCH_DATE_MARGIN_MS;
  if (within) {
    // An interval is 1 second or more: a range reaching past now needs no bound there.
    const secondsAgo = (atMs: number) => Math.floor((nowMs - atMs) / 1000);
    if (since !== undefined) {
      criteria.push(atom('YOUNGER'), atom(String(Math.max(1, secondsAgo(since)))));
    }
    if (before !== undefined && secondsAgo(before) >= 1) {
      criteria.push(atom('OLDER'), atom(String(secondsAgo(before))));
    }
    return criteria;
  }
  if (since !== undefined) {
    criteria.push(atom('SINCE'), atom(formatSearchDate(new Date(since))));
  }
  if (before !== undefined) {
    criteria.push(atom('BEFORE'), atom(formatSearchDate(new Date(before))));
  }
  return criteria;
}

export async function searchMailboxes(
  client: ImapFlow,
  mailboxes: SearchedMailbox[],
  query: SearchQuery,
  page: ResolvedPage,
): Promise<SearchPage> {
  const criteria = searchCriteria(query, client.capabilities.has('WITHIN'), Date.now());
  const newest = page.offset + page.limit;

  // Each mailbox is narrowed while it is selected: by the server, then the time's edges, the
  // exact id and key, and last the bodies, the dearest to read.
  const found: Matches[] = [];
  const texts: Texts = new Map();
  const shallow = newest <= EAGER_TEXTS_MAX_MESSAGES;
  const selectedBefore = client.mailbox ? client.mailbox.path : undefined;
  for (const { source, order } of await visitOrder(client, mailboxes, shallow)) {
    if (!(await selectMailbox(client, source.mailbox))) {
      continue;
    }
    let uids = await byArrival(client, criteria);
    uids = await withinTimeRange(client, uids, query);
    if (query.id !== undefined || query.key !== undefined) {
      uids = await withExactFields(client, uids, query);
    }
    if (query.text !== undefined) {
      uids = await withText(client, uids, query.text);
    }
    if (uids.length === 0) {
      continue;
    }
    let dates = new Map<number, number>();
    if (shallow && source.mailbox === selectedBefore) {
      await readTexts(client, source, uids.slice(-newest), texts);
      dates = new Map(
        uids.slice(-newest).flatMap((uid) => {
          const text = texts.get(textKey(source, uid));
          return text === undefined ? [] : [[uid, text.storedAt.getTime()] as const];
        }),
      );
    } else if (mailboxes.length > 1) {
      dates = await internalDates(
        client,
        Math.min(uids.length, newest) <= EAGER_DATES_MAX_MESSAGES
          ? uids.slice(-newest)
          : spread(uids, SAMPLED_DATES),
      );
    }
    found.push({ source, order, uids, dates });
  }

  const total = found.reduce((sum, { uids }) => sum + uids.length, 0);
  const chosen = await pageOf(client, found, total, page);
  return { total, hits: await fetchHits(client, chosen, texts) };
}

/**
 * The messages at positions offset to offset + limit of all mailboxes' matches merged newest
 * first. Of mailbox i (n_i matches of the total T), at least offset - (T - n_i) and at most
 * offset of its newest come before the page; so only its newest ranks from the first of those
 * to the second plus limit can be on it. Merging just those windows, the page starts after the
 * windows' first bounds added up: every message before a window is before the page, and every
 * message ahead of a page's message is in a window. When one mailbox holds most messages (the
 * waiting ones, usually), the windows add up to the others' counts plus the limit.
 */
async function pageOf(
  client: ImapFlow,
  found: Matches[],
  total: number,
  page: ResolvedPage,
): Promise<Candidate[]> {
  const { offset, limit } = page;
  if (found.length === 1) {
    const [{ source, uids }] = found as [Matches];
    const end = Math.max(0, uids.length - offset);
    return uids
      .slice(Math.max(0, end - limit), end)
      .reverse()
      .map((uid) => ({ source, uid }));
  }

  let bounds = found.map(({ uids }) => ({
    least: Math.max(0, offset - (total - uids.length)),
    most: Math.min(uids.length, offset),
  }));
  const width = bounds.reduce((sum, { least, most }) => sum + most - least + limit, 0);
  if (width > WINDOWS_MAX_MESSAGES) {
    bounds = narrowedBounds(found, offset, bounds);
  }
  const windows = found.map((matches, i) => {
    const count = matches.uids.length;
    const { least, most } = bounds[i] as { least: number; most: number };
    const last = Math.min(count, most + limit);
    // Newest ranks [least, last) are array indexes [count - last, count - least).
    return { matches, before: least, uids: matches.uids.slice(count - last, count - least) };
  });

  const merged: Array<Candidate & { storedAtMs: number; order: number }> = [];
  for (const { matches, uids } of selectedFirst(client, windows)) {
    const unread = uids.filter((uid) => !matches.dates.has(uid));
    if (unread.length > 0) {
      await selectMailbox(client, matches.source.mailbox);
      for (const [uid, storedAtMs] of await internalDates(client, unread)) {
        matches.dates.set(uid, storedAtMs);
      }
    }
    for (const uid of uids) {
      const storedAtMs = matches.dates.get(uid);
      if (storedAtMs !== undefined) {
        merged.push({ source: matches.source, uid, storedAtMs, order: matches.order });
      }
    }
  }
  merged.sort((a, b) => b.storedAtMs - a.storedAtMs || b.uid - a.uid || a.order - b.order);

  const skipped = offset - windows.reduce((sum, { before }) => sum + before, 0);
  return merged.slice(skipped, skipped + limit);
}

/** A message's place in the merged order: newer dates first, then higher UIDs, then mailboxes. */
interface OrderKey {
  storedAtMs: number;
  uid: number;
  order: number;
}

function isAhead(a: OrderKey, b: OrderKey): boolean {
  return (b.storedAtMs - a.storedAtMs || b.uid - a.uid || a.order - b.order) < 0;
}

/**
 * Narrower bounds on how many of each mailbox's newest come before the page (at offset), from
 * the dates read of some of them (samples). For a sampled message x, the messages of mailbox j
 * ahead of x number at least (the rank of j's last sample ahead of x) + 1 and at most the rank
 * of j's first sample behind it; added up, they bound x's place. A sample surely before the page
 * raises every mailbox's least count to its messages surely ahead of it (and its own mailbox's
 * past it); a sample surely on or after the page lowers every most count to those possibly
 * ahead of it. With S samples a mailbox, the bounds end about 4 T / S apart in all.
 */
function narrowedBounds(
  found: Matches[],
  offset: number,
  bounds: Array<{ least: number; most: number }>,
): Array<{ least: number; most: number }> {
  // Each mailbox's dated messages by newest-first rank.
  const samples = found.map((matches) => {
    const dated: Array<{ rank: number; key: OrderKey }> = [];
    for (let rank = 0; rank < matches.uids.length; rank += 1) {
      const uid = matches.uids[matches.uids.length - 1 - rank] as number;
      const storedAtMs = matches.dates.get(uid);
      if (storedAtMs !== undefined) {
        dated.push({ rank, key: { storedAtMs, uid, order: matches.order } });
      }
    }
    return dated;
  });
  const aheadBounds = (j: number, x: OrderKey) => {
    let least = 0;
    let most = (found[j] as Matches).uids.length;
    for (const { rank, key } of samples[j] as Array<{ rank: number; key: OrderKey }>) {
      if (isAhead(key, x)) {
        least = rank + 1;
      } else {
        most = rank;
        break;
      }
    }
    return { least, most };
  };

  const narrowed = bounds.map((bound) => ({ ...bound }));
  for (const [i, dated] of samples.entries()) {
    for (const { rank, key } of dated) {
      const ahead = found.map((_, j) =>
        j === i ? { least: rank, most: rank } : aheadBounds(j, key),
      );
      const placeMost = ahead.reduce((sum, { most }) => sum + most, 0);
      const placeLeast = ahead.reduce((sum, { least }) => sum + least, 0);
      if (placeMost < offset) {
        ahead.forEach(({ least }, j) => {
          const bound = narrowed[j] as { least: number; most: number };
          bound.least = Math.max(bound.least, j === i ? rank + 1 : least);
        });
      } else if (placeLeast >= offset) {
        ahead.forEach(({ most }, j) => {
          const bound = narrowed[j] as { least: number; most: number };
          bound.most = Math.min(bound.most, most);
        });
      }
    }
  }
  return narrowed;
}

/** `count` of these UIDs evenly spread, the first and the last among them. */
function spread(uids: number[], count: number): number[] {
  if (uids.length <= count) {
    return uids;
  }
  const step = (uids.length - 1) / (count - 1);
  return Array.from({ length: count }, (_, i) => uids[Math.round(i * step)] as number);
}

/**
 * The mailboxes that exist, in the order they are searched: the largest last, so it stays
 * selected for merging the page and fetching its texts (selecting 100,000 messages again costs
 * Dovecot about 0.1 s, and reading a text the first time after that 0.25 s); but for a shallow
 * page the one selected already first, whose texts are then read before it is left. STATUS
 * costs Dovecot under a millisecond.
 */
async function visitOrder(
  client: ImapFlow,
  mailboxes: SearchedMailbox[],
  shallow: boolean,
): Promise<Array<{ source: SearchedMailbox; order: number; messages: number }>> {
  const sized: Array<{ source: SearchedMailbox; order: number; messages: number }> = [];
  for (const [order, source] of mailboxes.entries()) {
    const selected = client.mailbox && client.mailbox.path === source.mailbox;
    const messages = selected
      ? (client.mailbox as { exists: number }).exists
      : (await mailboxStatus(client, source.mailbox))?.messages;
    if (messages !== undefined && messages > 0) {
      sized.push({ source, order, messages });
    }
  }
  sized.sort((a, b) => a.messages - b.messages || a.order - b.order);

  const selected = client.mailbox ? client.mailbox.path : undefined;
  const first = shallow ? sized.findIndex(({ source }) => source.mailbox === selected) : -1;
  return first === -1 ? sized : [...sized.splice(first, 1), ...sized];
}

/** The matches of `criteria` in the selected mailbox, in ARRIVAL order (oldest first). */
async function byArrival(client: ImapFlow, criteria: ImapAttribute[]): Promise<number[]> {
  const sorted = await allUidsByArrival(client, criteria);
  if (sorted !== undefined) {
    return sorted;
  }

  // A server without SORT: every match's date, sorted here.
  const charset = charsetOf(criteria) === 'UTF-8' ? [atom('CHARSET'), atom('UTF-8')] : [];
  const dates = await internalDates(client, await searchAllUids(client, [...charset, ...criteria]));
  return [...dates].sort(([uidA, a], [uidB, b]) => a - b || uidA - uidB).map(([uid]) => uid);
}

/**
 * Of UIDs in ARRIVAL order, those stored within the query's time range, compared as
 * inTimeRange() does: an INTERNALDATE has whole seconds, so a message stored at 12:00:00.700 is
 * at 12:00:00.000 and is outside a range from 12:00:00.500. The dates grow along the order, so
 * the range is one run of it, found from the dates of a few dozen messages per edge.
 */
async function withinTimeRange(
  client: ImapFlow,
  uids: number[],
  query: SearchQuery,
): Promise<number[]> {
  if (query.since === undefined && query.before === undefined) {
    return uids;
  }
  const start =
    query.since === undefined ? 0 : await firstStoredFrom(client, uids, query.since.getTime());
  const end =
    query.before === undefined
      ? uids.length
      : await firstStoredFrom(client, uids, query.before.getTime());
  return uids.slice(start, Math.max(start, end));
}

/**
 * The index of the first of these UIDs (in ARRIVAL order) stored at or after `atMs`, or their
 * count: each round reads the dates of EDGE_PROBES of those left and keeps the gap where the
 * edge is. A message expunged meanwhile counts as before the edge.
 */
async function firstStoredFrom(client: ImapFlow, uids: number[], atMs: number): Promise<number> {
  let low = 0;
  let high = uids.length;
  while (low < high) {
    const step = Math.ceil((high - low) / EDGE_PROBES);
    const probes: number[] = [];
    for (let index = low; index < high; index += step) {
      probes.push(index);
    }
    const dates = await internalDates(
      client,
      probes.map((index) => uids[index] as number),
    );

    let edge = high;
    for (const index of probes) {
      if ((dates.get(uids[index] as number) ?? 0) >= atMs) {
        edge = index;
        break;
      }
      low = index + 1;
    }
    high = edge;
  }
  return low;
}

/**
 * Of these UIDs of the selected mailbox, those whose id and key are the query's exactly: SEARCH
 * HEADER matches a substring, so `customer-4` finds `customer-42` too. Only those header
 * fields are fetched. The order is kept.
 */
async function withExactFields(
  client: ImapFlow,
  uids: number[],
  query: SearchQuery,
): Promise<number[]> {
  const fields = [
    ...(query.id === undefined ? [] : ['Message-ID', ORIGINAL_ID_HEADER]),
    ...(query.key === undefined ? [] : [HEADER.key]),
  ];
  const exact = { id: query.id, key: query.key };
  const matching = new Set<number>();
  for (let start = 0; start < uids.length; start += FETCH_BATCH_MAX_MESSAGES) {
    const batch = uids.slice(start, start + FETCH_BATCH_MAX_MESSAGES);
    const fetched = await client.fetchAll(
      formatUidSet(batch),
      { uid: true, headers: fields },
      { uid: true },
    );
    for (const message of fetched) {
      if (message.headers && matchesText(exact, message.headers)) {
        matching.add(message.uid);
      }
    }
  }
  return uids.filter((uid) => matching.has(uid));
}

/**
 * Of these UIDs of the selected mailbox, those whose body contains `text`, compared as
 * matchesText() compares the body of a whole message (lower-cased, as stored). The order is
 * kept.
 */
async function withText(client: ImapFlow, uids: number[], text: string): Promise<number[]> {
  const wanted = text.toLowerCase();
  const matching = new Set<number>();
  for (let start = 0; start < uids.length; start += FETCH_BATCH_MAX_MESSAGES) {
    const batch = uids.slice(start, start + FETCH_BATCH_MAX_MESSAGES);
    await streamBodies(client, batch, (uid, body) => {
      if (body.toString('utf8').toLowerCase().includes(wanted)) {
        matching.add(uid);
      }
    });
  }
  return uids.filter((uid) => matching.has(uid));
}

/** The INTERNALDATEs (ms) of these UIDs of the selected mailbox; gone ones are left out. */
async function internalDates(client: ImapFlow, uids: number[]): Promise<Map<number, number>> {
  const dated = new Map<number, number>();
  for (let start = 0; start < uids.length; start += FETCH_BATCH_MAX_MESSAGES) {
    const batch = uids.slice(start, start + FETCH_BATCH_MAX_MESSAGES);
    const fetched = await client.fetchAll(
      formatUidSet(batch),
      { uid: true, internalDate: true },
      { uid: true },
    );
    for (const message of fetched) {
      dated.set(message.uid, internalDateMs(message.internalDate));
    }
  }
  return dated;
}

/** Reads the texts and dates of these UIDs of the selected mailbox into `texts`. */
async function readTexts(
  client: ImapFlow,
  source: SearchedMailbox,
  uids: number[],
  texts: Texts,
): Promise<void> {
  if (uids.length === 0) {
    return;
  }
  const fetched = await client.fetchAll(
    formatUidSet(uids),
    { uid: true, internalDate: true, source: true },
    { uid: true },
  );
  for (const message of fetched) {
    if (message.source) {
      const storedAt = new Date(internalDateMs(message.internalDate));
      texts.set(textKey(source, message.uid), { raw: message.source, storedAt });
    }
  }
}

function textKey(source: SearchedMailbox, uid: number): string {
  return `${source.mailbox}\u0000${uid}`;
}

/**
 * The texts of the chosen messages, in the order chosen, from `texts` or read now; gone ones
 * are left out.
 */
async function fetchHits(
  client: ImapFlow,
  chosen: Candidate[],
  texts: Texts,
): Promise<SearchHit[]> {
  const byMailbox = new Map<SearchedMailbox, number[]>();
  for (const { source, uid } of chosen) {
    if (!texts.has(textKey(source, uid))) {
      byMailbox.set(source, [...(byMailbox.get(source) ?? []), uid]);
    }
  }

  const visits = [...byMailbox].map(([source, uids]) => ({ source, uids }));
  for (const { source, uids } of selectedFirst(client, visits)) {
    if (await selectMailbox(client, source.mailbox)) {
      await readTexts(client, source, uids, texts);
    }
  }

  return chosen.flatMap(({ source, uid }) => {
    const text = texts.get(textKey(source, uid));
    if (text === undefined) {
      return [];
    }
    const { topic, group, state, refPrefix, separator, mailbox } = source;
    const hit: SearchHit = {
      topic,
      group,
      state,
      ref: refPrefix + uid,
      location: `${mailbox}${separator}${uid}`,
      ...text,
    };
    return [hit];
  });
}

/**
 * Selects `mailbox` unless it is the selected one already: selecting a mailbox of 100,000
 * messages again costs Dovecot about 0.1 s (it lists the Maildir folder anew), and a search
 * visits each mailbox up to three times. False when it does not exist.
 */
async function selectMailbox(client: ImapFlow, mailbox: string): Promise<boolean> {
  if (client.mailbox && client.mailbox.path === mailbox) {
    return true;
  }
  return await selectIfExists(client, mailbox);
}

/** Visits in the given order, except that the selected mailbox comes first: one SELECT less. */
function selectedFirst<T extends { source?: SearchedMailbox; matches?: Matches }>(
  client: ImapFlow,
  visits: T[],
): T[] {
  const selected = client.mailbox ? client.mailbox.path : undefined;
  const mailboxOf = (visit: T) => (visit.source ?? visit.matches?.source)?.mailbox;
  return [
    ...visits.filter((visit) => mailboxOf(visit) === selected),
    ...visits.filter((visit) => mailboxOf(visit) !== selected),
  ];
}

function atom(value: string): ImapAttribute {
  return { type: 'ATOM', value };
}

function quoted(value: string): ImapAttribute {
  return { type: 'STRING', value };
}
