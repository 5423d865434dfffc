// Search on an IMAP server: each mailbox of the query's places answers a UID SEARCH, so only
// the matching UIDs cross the wire; their INTERNALDATEs order them across mailboxes (when more
// than one has matches), and only the page's message texts are fetched.
//
// Free text is the exception: Dovecot's SEARCH BODY (without a full-text index) looks in text/*
// parts only, never in an application/json payload. So the server narrows by everything else,
// and the bodies of what is left are read here, a batch at a time.

import type { ImapFlow, SearchObject } from 'imapflow';
import { ORIGINAL_ID_HEADER } from '../../consumer/dead-letter.js';
import { HEADER } from '../../message/headers.js';
import { inTimeRange, matchesText, readsText } from '../search.js';
import type { ResolvedPage } from '../search.js';
import type { MessageState, SearchHit, SearchPage, SearchQuery } from '../store.js';
import { uidsByArrival, formatUidSet, internalDateMs, selectIfExists } from './commands.js';

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

/** Message texts one FETCH reads for a free-text search: bounds each response. */
const TEXT_BATCH_MAX_MESSAGES = 200;

/** UIDs whose INTERNALDATE one FETCH reads: bounds each response. */
const DATE_BATCH_MAX_MESSAGES = 5_000;

/** SINCE and BEFORE compare dates in a zone the server picks: ask a day wider, then compare. */
const SEARCH_DATE_MARGIN_MS = 86_400_000;

interface Candidate {
  source: SearchedMailbox;
  uid: number;
  storedAtMs: number;
}

/** The SEARCH criteria of a query (the place is the mailbox; the time is compared after). */
export function searchCriteria(query: SearchQuery): SearchObject {
  const criteria: SearchObject = { deleted: false };
  const header: Record<string, string> = {};
  if (query.key !== undefined) {
    header[HEADER.key] = query.key;
  }
  if (query.header !== undefined) {
    header[query.header.name] = query.header.value;
  }
  if (Object.keys(header).length > 0) {
    criteria.header = header;
  }
  if (query.id !== undefined) {
    // A dead letter is found by the id of the message it reports on.
    criteria.or = [
      { header: { 'Message-ID': query.id } },
      { header: { [ORIGINAL_ID_HEADER]: query.id } },
    ];
  }
  if (query.since !== undefined) {
    criteria.since = new Date(query.since.getTime() - SEARCH_DATE_MARGIN_MS);
  }
  if (query.before !== undefined) {
    criteria.before = new Date(query.before.getTime() + SEARCH_DATE_MARGIN_MS);
  }
  return criteria;
}

export async function searchMailboxes(
  client: ImapFlow,
  mailboxes: SearchedMailbox[],
  query: SearchQuery,
  page: ResolvedPage,
): Promise<SearchPage> {
  const criteria = searchCriteria(query);
  const timed = query.since !== undefined || query.before !== undefined;

  const found: Array<{ source: SearchedMailbox; uids: number[] }> = [];
  for (const source of mailboxes) {
    if (!(await selectIfExists(client, source.mailbox))) {
      continue;
    }
    let uids = (await client.search(criteria, { uid: true })) || [];
    if (query.id !== undefined || query.key !== undefined) {
      uids = await withExactFields(client, uids, query);
    }
    if (query.text !== undefined) {
      uids = await withText(client, uids, query.text);
    }
    if (uids.length > 0) {
      found.push({ source, uids });
    }
  }

  // One mailbox with no time range needs no dates: UIDs grow as messages arrive.
  let candidates: Candidate[];
  if (found.length === 1 && !timed) {
    const [{ source, uids }] = found as [{ source: SearchedMailbox; uids: number[] }];
    candidates = uids.map((uid) => ({ source, uid, storedAtMs: uid }));
  } else {
    candidates = [];
    for (const { source, uids } of found) {
      await selectIfExists(client, source.mailbox);
      for (const dated of await internalDates(client, await newestOf(client, uids, query, page))) {
        if (inTimeRange(query, dated.storedAtMs)) {
          candidates.push({ source, ...dated });
        }
      }
    }
  }
  candidates.sort((a, b) => b.storedAtMs - a.storedAtMs || b.uid - a.uid);

  const chosen = candidates.slice(page.offset, page.offset + page.limit);
  const hits = await fetchHits(client, chosen);
  // Counted from the UIDs: newestOf() leaves only dates of the others unread.
  const total = timed ? candidates.length : found.reduce((sum, { uids }) => sum + uids.length, 0);
  return { total, hits };
}

/**
 * The UIDs of the selected mailbox whose dates the page needs. A page of a listing (no time
 * range, nothing to match in the texts) can only hold each mailbox's newest offset + limit, and
 * the server hands those out sorted (SORT REVERSE ARRIVAL): the dates of the rest are never
 * read. Otherwise, or when the server cannot sort, all of them.
 */
async function newestOf(
  client: ImapFlow,
  uids: number[],
  query: SearchQuery,
  page: ResolvedPage,
): Promise<number[]> {
  const needed = page.offset + page.limit;
  const listing = query.since === undefined && query.before === undefined && !readsText(query);
  if (!listing || uids.length <= needed) {
    return uids;
  }
  return (await uidsByArrival(client, ['UNDELETED'], needed, true)) ?? uids;
}

/**
 * Of these UIDs of the selected mailbox, those whose id and key are the query's exactly: SEARCH
 * HEADER matches a substring, so `customer-4` finds `customer-42` too. Only those header
 * fields are fetched.
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
  const matching: number[] = [];
  for (let start = 0; start < uids.length; start += DATE_BATCH_MAX_MESSAGES) {
    const batch = uids.slice(start, start + DATE_BATCH_MAX_MESSAGES);
    const fetched = await client.fetchAll(
      formatUidSet(batch),
      { uid: true, headers: fields },
      { uid: true },
    );
    for (const message of fetched) {
      if (message.headers && matchesText(exact, message.headers)) {
        matching.push(message.uid);
      }
    }
  }
  return matching.sort((a, b) => a - b);
}

/** Of these UIDs of the selected mailbox, those whose body contains `text`. */
async function withText(client: ImapFlow, uids: number[], text: string): Promise<number[]> {
  const matching: number[] = [];
  for (let start = 0; start < uids.length; start += TEXT_BATCH_MAX_MESSAGES) {
    const batch = uids.slice(start, start + TEXT_BATCH_MAX_MESSAGES);
    const fetched = await client.fetchAll(
      formatUidSet(batch),
      { uid: true, source: true },
      { uid: true },
    );
    for (const message of fetched) {
      if (message.source && matchesText({ text }, message.source)) {
        matching.push(message.uid);
      }
    }
  }
  return matching;
}

async function internalDates(
  client: ImapFlow,
  uids: number[],
): Promise<Array<{ uid: number; storedAtMs: number }>> {
  const dated: Array<{ uid: number; storedAtMs: number }> = [];
  for (let start = 0; start < uids.length; start += DATE_BATCH_MAX_MESSAGES) {
    const batch = uids.slice(start, start + DATE_BATCH_MAX_MESSAGES);
    const fetched = await client.fetchAll(
      formatUidSet(batch),
      { uid: true, internalDate: true },
      { uid: true },
    );
    for (const message of fetched) {
      dated.push({ uid: message.uid, storedAtMs: internalDateMs(message.internalDate) });
    }
  }
  return dated;
}

/** The texts of the chosen messages, in the order chosen; gone ones are left out. */
async function fetchHits(client: ImapFlow, chosen: Candidate[]): Promise<SearchHit[]> {
  const byMailbox = new Map<SearchedMailbox, number[]>();
  for (const { source, uid } of chosen) {
    byMailbox.set(source, [...(byMailbox.get(source) ?? []), uid]);
  }

  const texts = new Map<string, { raw: Buffer; storedAt: Date }>();
  for (const [source, uids] of byMailbox) {
    if (!(await selectIfExists(client, source.mailbox))) {
      continue;
    }
    const fetched = await client.fetchAll(
      formatUidSet(uids),
      { uid: true, internalDate: true, source: true },
      { uid: true },
    );
    for (const message of fetched) {
      if (message.source) {
        const storedAt = new Date(internalDateMs(message.internalDate));
        texts.set(`${source.mailbox}\u0000${message.uid}`, { raw: message.source, storedAt });
      }
    }
  }

  return chosen.flatMap(({ source, uid }) => {
    const text = texts.get(`${source.mailbox}\u0000${uid}`);
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
