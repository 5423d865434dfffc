// The IMAP commands the IMAP store sends itself instead of through imapflow's methods, because
// those methods hide what the store depends on: the MODIFIED code of a conditional STORE, the
// COPYUID code of MOVE and COPY, and the server's reason for a NO (imapflow's messageMove and
// messageFlagsAdd return false and log the reason instead of throwing it). Also STATUS, whose
// imapflow form spends a LIST on a missing mailbox, and SORT, which imapflow does not have.

import type { ImapAttribute, ImapAttributeList, ImapFlow, ImapResponse } from 'imapflow';

/** Handles one untagged response that arrives while a command runs. */
type UntaggedHandler = (untagged: ImapResponse) => void | Promise<void>;

interface ExecResult {
  response: ImapResponse;
  next(): void;
}

// exec() is imapflow's core command method: every one of its own commands is built on it (see
// node_modules/imapflow/dist/esm/commands/store.js), but it is left out of the type definitions.
interface CommandExecutor {
  exec(
    command: string,
    attributes: ImapAttribute[] | false,
    options?: { untagged?: Record<string, UntaggedHandler> },
  ): Promise<ExecResult>;
}

/** A mailbox as LIST names it. */
export interface ListedMailbox {
  path: string;
  delimiter: string | undefined;
  flags: Set<string>;
}

/** What a conditional STORE did, message by message. */
export interface ConditionalStoreResult {
  /** UIDs the server reported changing, with an untagged FETCH carrying their new MODSEQ. */
  updated: Set<number>;
  /** UIDs the server refused to change because they changed after `unchangedSince`. */
  modified: Set<number>;
}

/**
 * Sends one command and returns its tagged OK response; a NO or BAD rejects with imapflow's
 * error, which carries `responseStatus` and `responseText`. imapflow parks its reader until
 * next() is called, so it is called as soon as the response is in hand.
 */
export async function execute(
  client: ImapFlow,
  command: string,
  attributes: ImapAttribute[] | false,
  untagged?: Record<string, UntaggedHandler>,
): Promise<ImapResponse> {
  const executor = client as unknown as CommandExecutor;
  const result = await executor.exec(command, attributes, untagged ? { untagged } : undefined);
  result.next();
  return result.response;
}

/** `LIST "" pattern`: the mailboxes matching `pattern` (`%` stops at the delimiter). */
export async function listMailboxes(client: ImapFlow, pattern: string): Promise<ListedMailbox[]> {
  const listed: ListedMailbox[] = [];
  await execute(client, 'LIST', [string(''), string(pattern)], {
    LIST: (untagged) => {
      const mailbox = parseListResponse(untagged);
      if (mailbox) {
        listed.push(mailbox);
      }
    },
  });
  return listed;
}

/**
 * `UID STORE uids (UNCHANGEDSINCE modseq) +FLAGS.SILENT (keyword)` (RFC 7162 section 3.1.3), or
 * `-FLAGS.SILENT` to take the keyword away. Reads both halves of the server's answer: the
 * MODIFIED code names the UIDs it refused, and the untagged FETCH (MODSEQ) responses, which the
 * RFC requires even for .SILENT, name the UIDs it changed. A UID that another session has
 * expunged meanwhile is in neither set.
 */
export async function storeKeywordUnchangedSince(
  client: ImapFlow,
  uids: number[],
  keyword: string,
  unchangedSince: bigint,
  operation: 'add' | 'remove' = 'add',
): Promise<ConditionalStoreResult> {
  const updated = new Set<number>();
  const attributes: ImapAttribute[] = [
    sequence(uids),
    [atom('UNCHANGEDSINCE'), atom(unchangedSince.toString())],
    atom(operation === 'add' ? '+FLAGS.SILENT' : '-FLAGS.SILENT'),
    [atom(keyword)],
  ];

  const response = await execute(client, 'UID STORE', attributes, {
    FETCH: (untagged) => {
      const change = parseFetchModseq(untagged);
      if (change && change.modseq > unchangedSince) {
        updated.add(change.uid);
      }
    },
  });

  const code = responseCode(response);
  const modified = new Set<number>();
  if (code?.name === 'MODIFIED') {
    for (const uid of parseUidSet(atomText(code.args[0]))) {
      modified.add(uid);
      updated.delete(uid);
    }
  }
  return { updated, modified };
}

/** What a UID SEARCH found, and the highest MODSEQ among the messages found (RFC 7162). */
export interface SearchResult {
  uids: number[];
  modseq: bigint | undefined;
}

/**
 * `UID SEARCH MODSEQ 1 <criteria>`, for at most `limit` UIDs, lowest first. The MODSEQ
 * criterion matches every message; it is there to have the server report the highest MODSEQ
 * of the result, read in the same snapshot as the UIDs. With `partial` (ESEARCH and RFC 5267
 * PARTIAL) the server sends only the first `limit` UIDs instead of all of them.
 */
export async function searchUids(
  client: ImapFlow,
  criteria: string[],
  limit: number,
  partial: boolean,
): Promise<SearchResult> {
  const query = [atom('MODSEQ'), atom('1'), ...criteria.map(atom)];
  let uids: number[] = [];
  let modseq: bigint | undefined;

  if (partial) {
    const returning = [atom('RETURN'), [atom('PARTIAL'), atom(`1:${limit}`)]];
    await execute(client, 'UID SEARCH', [...returning, ...query], {
      ESEARCH: (untagged) => {
        const result = parseEsearch(untagged);
        uids = result.uids;
        modseq = result.modseq;
      },
    });
    return { uids: uids.slice(0, limit), modseq };
  }

  await execute(client, 'UID SEARCH', query, {
    SEARCH: (untagged) => {
      const result = parseSearch(untagged);
      uids.push(...result.uids);
      modseq = result.modseq ?? modseq;
    },
  });
  return { uids: uids.sort((a, b) => a - b).slice(0, limit), modseq };
}

/**
 * `UID FETCH uids (UID BODY.PEEK[])`: the full text of each message, by UID. PEEK leaves \Seen
 * alone. Messages another session has expunged meanwhile are simply missing from the map.
 */
export async function fetchSources(client: ImapFlow, uids: number[]): Promise<Map<number, Buffer>> {
  const sources = new Map<number, Buffer>();
  const items = [atom('UID'), { type: 'ATOM', value: 'BODY.PEEK', section: [] }];
  await execute(client, 'UID FETCH', [sequence(uids), items], {
    FETCH: (untagged) => {
      const message = parseFetchBody(untagged);
      if (message) {
        sources.set(message.uid, message.source);
      }
    },
  });
  return sources;
}

/** What a claim reads of a message: its text, or for an oversized one only its top. */
export interface ClaimText {
  raw: Buffer;
  size: number;
  oversized: boolean;
}

/** How much of an oversized message a claim reads: its id and key are near the top. */
export const OVERSIZED_PEEK_BYTES = 64 * 1024;

/**
 * The texts of messages being claimed, the size first: `BODY[]` only for the messages within
 * `maxBytes`, the first OVERSIZED_PEEK_BYTES (`BODY[]<0.n>`) of the others. `sizes` are the
 * RFC822.SIZE values a FETCH of the claim already read; a UID missing there is asked for.
 */
export async function fetchClaimTexts(
  client: ImapFlow,
  uids: number[],
  maxBytes: number | undefined,
  sizes = new Map<number, number>(),
): Promise<Map<number, ClaimText>> {
  const texts = new Map<number, ClaimText>();
  if (uids.length === 0) {
    return texts;
  }
  if (maxBytes === undefined) {
    for (const [uid, raw] of await fetchSources(client, uids)) {
      texts.set(uid, { raw, size: raw.length, oversized: false });
    }
    return texts;
  }

  const unsized = uids.filter((uid) => !sizes.has(uid));
  if (unsized.length > 0) {
    const fetched = await client.fetchAll(
      formatUidSet(unsized),
      { uid: true, size: true },
      { uid: true },
    );
    for (const message of fetched) {
      if (message.size !== undefined) {
        sizes.set(message.uid, message.size);
      }
    }
  }
  const present = uids.filter((uid) => sizes.has(uid));
  const within = present.filter((uid) => (sizes.get(uid) as number) <= maxBytes);
  const over = present.filter((uid) => (sizes.get(uid) as number) > maxBytes);

  // A claim whose every pick is oversized asks for no BODY[] at all: an empty UID set is BAD.
  const sources =
    within.length > 0 ? await fetchSources(client, within) : new Map<number, Buffer>();
  for (const [uid, raw] of sources) {
    texts.set(uid, { raw, size: raw.length, oversized: false });
  }
  if (over.length > 0) {
    const tops = await client.fetchAll(
      formatUidSet(over),
      { uid: true, source: { start: 0, maxLength: OVERSIZED_PEEK_BYTES } },
      { uid: true },
    );
    for (const message of tops) {
      const size = sizes.get(message.uid);
      if (message.source && size !== undefined) {
        texts.set(message.uid, { raw: message.source, size, oversized: true });
      }
    }
  }
  return texts;
}

/**
 * `APPEND mailbox CATENATE (TEXT {n} URL "/mailbox;UIDVALIDITY=v/;UID=u")` (RFC 4469): stores
 * `text` followed by a message the server already holds, which never passes through the
 * client. The URL's mailbox is one of ours, whose names need no percent-encoding.
 */
export async function appendCatenated(
  client: ImapFlow,
  mailbox: string,
  text: Buffer,
  from: { mailbox: string; uidValidity: bigint | undefined; uid: number },
): Promise<void> {
  const validity = from.uidValidity === undefined ? '' : `;UIDVALIDITY=${from.uidValidity}`;
  const url = `/${encodeURIComponent(from.mailbox)}${validity}/;UID=${from.uid}`;
  const parts: ImapAttributeList = [
    atom('TEXT'),
    { type: 'LITERAL', value: text },
    atom('URL'),
    string(url),
  ];
  await execute(client, 'APPEND', [string(mailbox), atom('CATENATE'), parts]);
}

/** A message to APPEND: its text, its flags and, when not now, its INTERNALDATE. */
export interface AppendedMessage {
  raw: Buffer;
  flags: string[];
  internalDate?: Date;
}

/**
 * MULTIAPPEND (RFC 3502): all `messages` to `mailbox` in one command, which the server stores
 * all or none. Returns their UIDs from APPENDUID (UIDPLUS) in the order given, or undefined
 * when the server reported none.
 */
export async function appendMessages(
  client: ImapFlow,
  mailbox: string,
  messages: AppendedMessage[],
): Promise<number[] | undefined> {
  const attributes: ImapAttribute[] = [string(mailbox)];
  for (const message of messages) {
    attributes.push(message.flags.map(atom));
    if (message.internalDate !== undefined) {
      attributes.push(string(formatInternalDate(message.internalDate)));
    }
    attributes.push({ type: 'LITERAL', value: message.raw });
  }

  const response = await execute(client, 'APPEND', attributes);
  const code = responseCode(response);
  if (code?.name !== 'APPENDUID') {
    return undefined;
  }
  const uids = parseUidSet(atomText(code.args[1]));
  return uids.length === messages.length ? uids : undefined;
}

/** `UID STORE uids [+-]FLAGS.SILENT (flags)`. */
export async function storeFlags(
  client: ImapFlow,
  uids: number[],
  operation: 'add' | 'remove',
  flags: string[],
): Promise<void> {
  const item = operation === 'add' ? '+FLAGS.SILENT' : '-FLAGS.SILENT';
  await execute(client, 'UID STORE', [sequence(uids), atom(item), flags.map(atom)]);
}

/** Where a MOVE or COPY put messages, from its COPYUID code (RFC 4315). */
export interface Transfer {
  /** Source UID to destination UID; a UID missing here was not transferred. */
  targets: Map<number, number>;
  /** The destination's UIDVALIDITY: destination UIDs mean something only together with it. */
  uidValidity: bigint | undefined;
}

/**
 * `UID MOVE uids destination` (RFC 6851). Returns the COPYUID map from source to destination
 * UID (RFC 4315), which for MOVE usually comes in an untagged OK before the expunges. A UID
 * missing from the map was not moved: it no longer existed.
 */
export async function moveMessages(
  client: ImapFlow,
  uids: number[],
  destination: string,
): Promise<Transfer> {
  return await transfer(client, 'UID MOVE', uids, destination);
}

/** `UID COPY uids destination`, returning the COPYUID map like moveMessages. */
export async function copyMessages(
  client: ImapFlow,
  uids: number[],
  destination: string,
): Promise<Transfer> {
  return await transfer(client, 'UID COPY', uids, destination);
}

/** `UID EXPUNGE uids` (UIDPLUS): removes only these messages, whatever else is \Deleted. */
export async function expungeMessages(client: ImapFlow, uids: number[]): Promise<void> {
  await execute(client, 'UID EXPUNGE', [sequence(uids)]);
}

async function transfer(
  client: ImapFlow,
  command: 'UID MOVE' | 'UID COPY',
  uids: number[],
  destination: string,
): Promise<Transfer> {
  const result: Transfer = { targets: new Map(), uidValidity: undefined };
  const collect = (response: ImapResponse): void => {
    const code = responseCode(response);
    if (code?.name !== 'COPYUID') {
      return;
    }
    const sources = parseUidSet(atomText(code.args[1]));
    const targets = parseUidSet(atomText(code.args[2]));
    if (sources.length === targets.length) {
      sources.forEach((uid, i) => result.targets.set(uid, targets[i] as number));
    }
    result.uidValidity = toModseq(atomText(code.args[0])) ?? result.uidValidity;
  };

  const response = await execute(client, command, [sequence(uids), string(destination)], {
    OK: collect,
  });
  collect(response);
  return result;
}

/** `UID STORE uids +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE uids`: removes these messages. */
export async function deleteMessages(client: ImapFlow, uids: number[]): Promise<void> {
  if (uids.length === 0) {
    return;
  }
  await storeFlags(client, uids, 'add', ['\\Deleted']);
  await expungeMessages(client, uids);
}

/** What STATUS reports of a mailbox that the session need not have selected. */
export interface MailboxStatus {
  messages: number;
  uidValidity: bigint | undefined;
  highestModseq: bigint | undefined;
}

/**
 * `STATUS mailbox (MESSAGES UIDVALIDITY [HIGHESTMODSEQ])`, undefined when the mailbox does not
 * exist. One round trip: imapflow's status() follows a NO with a LIST to tell why.
 */
export async function mailboxStatus(
  client: ImapFlow,
  mailbox: string,
): Promise<MailboxStatus | undefined> {
  const items = [atom('MESSAGES'), atom('UIDVALIDITY')];
  if (client.capabilities.has('CONDSTORE')) {
    items.push(atom('HIGHESTMODSEQ'));
  }
  const status: MailboxStatus = { messages: 0, uidValidity: undefined, highestModseq: undefined };
  try {
    await execute(client, 'STATUS', [string(mailbox), items], {
      STATUS: (untagged) => {
        const values = untagged.attributes?.[1];
        if (!Array.isArray(values)) {
          return;
        }
        for (let i = 0; i + 1 < values.length; i += 2) {
          const name = atomText(values[i])?.toUpperCase();
          const value = atomText(values[i + 1]);
          if (name === 'MESSAGES') {
            status.messages = Number(value);
          } else if (name === 'UIDVALIDITY') {
            status.uidValidity = toModseq(value);
          } else if (name === 'HIGHESTMODSEQ') {
            status.highestModseq = toModseq(value);
          }
        }
      },
    });
  } catch (err) {
    if (isMissingMailbox(err)) {
      return undefined;
    }
    throw err;
  }
  return status;
}

/**
 * The highest UID of the selected mailbox, 0 when it is empty, looked for from UID `from` up:
 * the SEARCH walks only the messages from there. A `from` above them all still finds the last
 * message, since `n:*` names the range between n and the highest UID, whichever is larger.
 */
export async function highestUid(client: ImapFlow, from: number): Promise<number> {
  const uids = await searchAllUids(client, ['UID', `${Math.max(1, from)}:*`]);
  return uids.at(-1) ?? 0;
}

/**
 * `UID SEARCH <criteria>`: every UID that matches, lowest first, in one ESEARCH answer (a
 * compact UID set) when the server can.
 */
export async function searchAllUids(
  client: ImapFlow,
  criteria: Array<string | ImapAttribute>,
): Promise<number[]> {
  const keys = criteria.map((key) => (typeof key === 'string' ? atom(key) : key));
  let uids: number[] = [];
  if (client.capabilities.has('ESEARCH')) {
    await execute(client, 'UID SEARCH', [atom('RETURN'), [atom('ALL')], ...keys], {
      ESEARCH: (untagged) => {
        uids = parseEsearch(untagged).uids;
      },
    });
    return uids.sort((a, b) => a - b);
  }
  await execute(client, 'UID SEARCH', keys, {
    SEARCH: (untagged) => {
      uids.push(...parseSearch(untagged).uids);
    },
  });
  return uids.sort((a, b) => a - b);
}

/**
 * The first `limit` UIDs matching `criteria` in INTERNALDATE order, earliest first (SORT
 * ARRIVAL, RFC 5256), or with `newest` the latest first (REVERSE ARRIVAL); undefined when the
 * server cannot sort. With ESORT and PARTIAL (RFC 5267) only those `limit` UIDs cross the wire,
 * however many match.
 */
export async function uidsByArrival(
  client: ImapFlow,
  criteria: string[],
  limit: number,
  newest = false,
): Promise<number[] | undefined> {
  const caps = client.capabilities;
  if (!caps.has('SORT')) {
    return undefined;
  }
  const order = newest ? [atom('REVERSE'), atom('ARRIVAL')] : [atom('ARRIVAL')];
  const keys = [order, atom('US-ASCII'), ...criteria.map(atom)];
  let uids: number[] = [];

  // Dovecot answers PARTIAL under ESORT with CONTEXT=SEARCH, without naming CONTEXT=SORT.
  const partial =
    caps.has('ESORT') &&
    (caps.has('CONTEXT=SORT') || caps.has('CONTEXT=SEARCH') || caps.has('PARTIAL'));
  if (partial) {
    const returning = [atom('RETURN'), [atom('PARTIAL'), atom(`1:${limit}`)]];
    await execute(client, 'UID SORT', [...returning, ...keys], {
      ESEARCH: (untagged) => {
        uids = parseEsearch(untagged).uids;
      },
    });
    return uids.slice(0, limit);
  }

  await execute(client, 'UID SORT', keys, {
    SORT: (untagged) => {
      uids.push(...parseSort(untagged));
    },
  });
  return uids.slice(0, limit);
}

/**
 * Every UID matching `criteria` in INTERNALDATE order, earliest first (`UID SORT (ARRIVAL)`,
 * RFC 5256: ties in UID order), in one ESEARCH answer (a compact UID set) when the server has
 * ESORT; undefined when it cannot sort. Criteria are attributes so that values can be strings.
 */
export async function allUidsByArrival(
  client: ImapFlow,
  criteria: ImapAttribute[],
): Promise<number[] | undefined> {
  const caps = client.capabilities;
  if (!caps.has('SORT')) {
    return undefined;
  }
  const keys = [[atom('ARRIVAL')], atom(charsetOf(criteria)), ...criteria];
  let uids: number[] = [];

  if (caps.has('ESORT')) {
    await execute(client, 'UID SORT', [atom('RETURN'), [atom('ALL')], ...keys], {
      ESEARCH: (untagged) => {
        uids = parseEsearch(untagged).uids;
      },
    });
    return uids;
  }
  await execute(client, 'UID SORT', keys, {
    SORT: (untagged) => {
      uids.push(...parseSort(untagged));
    },
  });
  return uids;
}

/** The UIDs of a plain SORT answer (`* SORT 4 2 9`), in its order. */
function parseSort(untagged: ImapResponse): number[] {
  const uids: number[] = [];
  for (const item of untagged.attributes ?? []) {
    const uid = Number(atomText(item));
    if (Number.isSafeInteger(uid) && uid > 0) {
      uids.push(uid);
    }
  }
  return uids;
}

/** The charset a SORT or SEARCH must name for these criteria: UTF-8 once a string is not ASCII. */
export function charsetOf(criteria: ImapAttribute[]): 'US-ASCII' | 'UTF-8' {
  const ascii = (attribute: ImapAttribute): boolean => {
    if (Array.isArray(attribute)) {
      return attribute.every(ascii);
    }
    const value = attribute?.value;
    return typeof value !== 'string' || Buffer.byteLength(value, 'utf8') === value.length;
  };
  return criteria.every(ascii) ? 'US-ASCII' : 'UTF-8';
}

/**
 * `UID FETCH uids (UID BODY.PEEK[TEXT])`: the body of each message (the text after its header
 * block, as stored, transfer encoding and all), handed to `onBody` as each response arrives, so
 * that only one body is held at a time. Expunged messages are simply not reported.
 */
export async function streamBodies(
  client: ImapFlow,
  uids: number[],
  onBody: (uid: number, body: Buffer) => void,
): Promise<void> {
  const items = [atom('UID'), { type: 'ATOM', value: 'BODY.PEEK', section: [atom('TEXT')] }];
  await execute(client, 'UID FETCH', [sequence(uids), items], {
    FETCH: (untagged) => {
      const message = parseFetchBody(untagged, 'TEXT');
      if (message) {
        onBody(message.uid, message.source);
      }
    },
  });
}

/**
 * The IMAP response code of a failed command (`TRYCREATE`, `NONEXISTENT`, ...), read from
 * imapflow's error or from the MailbusError that wraps it.
 */
export function failureCode(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 3 && typeof current === 'object' && current !== null; depth += 1) {
    const fields = current as {
      serverResponseCode?: unknown;
      response?: unknown;
      cause?: unknown;
    };
    if (typeof fields.serverResponseCode === 'string') {
      return fields.serverResponseCode.toUpperCase();
    }
    if (typeof fields.response === 'object' && fields.response !== null) {
      const code = responseCode(fields.response as ImapResponse);
      if (code) {
        return code.name;
      }
    }
    current = fields.cause;
  }
  return undefined;
}

/**
 * Whether a command failed because a mailbox it names does not exist: a NO [TRYCREATE] to an
 * APPEND, COPY or MOVE, a NO [NONEXISTENT] to a SELECT or STATUS, or imapflow's own finding.
 */
export function isMissingMailbox(err: unknown): boolean {
  const code = failureCode(err);
  if (code === 'TRYCREATE' || code === 'NONEXISTENT') {
    return true;
  }
  let current: unknown = err;
  for (let depth = 0; depth < 3 && typeof current === 'object' && current !== null; depth += 1) {
    if ((current as { mailboxMissing?: unknown }).mailboxMissing === true) {
      return true;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * Runs `operation`, which stores into `mailbox`; when the server answers that the mailbox does
 * not exist (TRYCREATE), creates it and runs the operation once more. Queues made by earlier
 * versions lack mailboxes that later ones add, and a recovering consumer may have taken an
 * in-progress mailbox away: the first write recreates what it needs.
 */
export async function creatingMailbox<T>(
  client: ImapFlow,
  mailbox: string,
  operation: () => Promise<T>,
): Promise<T> {
  try {
    return await operation();
  } catch (err) {
    if (failureCode(err) !== 'TRYCREATE') {
      throw err;
    }
  }
  await client.mailboxCreate(mailbox);
  return await operation();
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** An IMAP date-time (`" 3-Feb-2025 14:05:09 +0000"`), in UTC; IMAP has whole seconds only. */
export function formatInternalDate(date: Date): string {
  const day = String(date.getUTCDate()).padStart(2, ' ');
  const time = date.toISOString().slice(11, 19);
  return `${day}-${MONTHS[date.getUTCMonth()]}-${date.getUTCFullYear()} ${time} +0000`;
}

/** An IMAP date for SEARCH BEFORE and SINCE (`3-Feb-2025`), in UTC. */
export function formatSearchDate(date: Date): string {
  return `${date.getUTCDate()}-${MONTHS[date.getUTCMonth()]}-${date.getUTCFullYear()}`;
}

/** The UID set of `uids` in its shortest form: `1:5,9`. */
export function formatUidSet(uids: Iterable<number>): string {
  const sorted = [...new Set(uids)].sort((a, b) => a - b);
  const ranges: string[] = [];
  let start = sorted[0];
  let end = start;
  for (const uid of sorted.slice(1)) {
    if (end !== undefined && uid === end + 1) {
      end = uid;
      continue;
    }
    ranges.push(start === end ? `${start}` : `${start}:${end}`);
    start = uid;
    end = uid;
  }
  if (start !== undefined) {
    ranges.push(start === end ? `${start}` : `${start}:${end}`);
  }
  return ranges.join(',');
}

/** Expands a UID set such as `1:5,9` (ranges may run downwards, `5:1`). */
export function parseUidSet(text: string | undefined): number[] {
  const uids: number[] = [];
  for (const part of (text ?? '').split(',')) {
    const [first, last] = part.split(':').map(Number);
    if (first === undefined || !Number.isSafeInteger(first) || first < 1) {
      continue;
    }
    const end = last === undefined || !Number.isSafeInteger(last) ? first : last;
    const step = end >= first ? 1 : -1;
    for (let uid = first; uid !== end + step; uid += step) {
      uids.push(uid);
    }
  }
  return uids;
}

/** The `[CODE args]` at the start of a status response, as `{ name, args }`. */
function responseCode(response: ImapResponse): { name: string; args: ImapAttribute[] } | undefined {
  const section = response.attributes?.[0]?.section;
  const name = section?.[0]?.value;
  if (!section || typeof name !== 'string') {
    return undefined;
  }
  return { name: name.toUpperCase(), args: section.slice(1) };
}

// `* 4 FETCH (UID 4 MODSEQ (12))`: the UID and MODSEQ a STORE reported for one message.
function parseFetchModseq(untagged: ImapResponse): { uid: number; modseq: bigint } | undefined {
  const items = untagged.attributes?.[1];
  if (!Array.isArray(items)) {
    return undefined;
  }
  let uid: number | undefined;
  let modseq: bigint | undefined;
  for (let i = 0; i + 1 < items.length; i += 2) {
    const name = atomText(items[i])?.toUpperCase();
    const value = items[i + 1];
    if (name === 'UID') {
      uid = Number(atomText(value));
    } else if (name === 'MODSEQ' && Array.isArray(value)) {
      modseq = toModseq(atomText(value[0]));
    }
  }
  if (uid === undefined || !Number.isSafeInteger(uid) || modseq === undefined) {
    return undefined;
  }
  return { uid, modseq };
}

// `* ESEARCH (TAG "A1") UID PARTIAL (1:100 2:50,52:101) MODSEQ 104`
function parseEsearch(untagged: ImapResponse): SearchResult {
  const items = untagged.attributes ?? [];
  let uids: number[] = [];
  let modseq: bigint | undefined;
  for (let i = 0; i < items.length; i += 1) {
    const name = atomText(items[i])?.toUpperCase();
    const value = items[i + 1];
    if (name === 'PARTIAL' && Array.isArray(value)) {
      uids = parseUidSet(atomText(value[1]));
    } else if (name === 'ALL') {
      uids = parseUidSet(atomText(value));
    } else if (name === 'MODSEQ') {
      modseq = toModseq(atomText(value));
    }
  }
  return { uids, modseq };
}

// `* SEARCH 2 5 6 (MODSEQ 917162500)`; imapflow's parser may put the numbers in `numbers`.
function parseSearch(untagged: ImapResponse): SearchResult {
  const uids = [...(untagged.numbers ?? [])];
  let modseq: bigint | undefined;
  for (const item of untagged.attributes ?? []) {
    if (Array.isArray(item)) {
      if (atomText(item[0])?.toUpperCase() === 'MODSEQ') {
        modseq = toModseq(atomText(item[1]));
      }
      continue;
    }
    const uid = Number(atomText(item));
    if (Number.isSafeInteger(uid) && uid > 0) {
      uids.push(uid);
    }
  }
  return { uids, modseq };
}

// `* 4 FETCH (UID 4 BODY[] {512}...)`, possibly with MODSEQ or FLAGS among the items; with
// `section`, the `BODY[section]` item instead.
function parseFetchBody(
  untagged: ImapResponse,
  section?: string,
): { uid: number; source: Buffer } | undefined {
  const items = untagged.attributes?.[1];
  if (!Array.isArray(items)) {
    return undefined;
  }
  let uid: number | undefined;
  let source: Buffer | undefined;
  for (let i = 0; i + 1 < items.length; i += 2) {
    const item = items[i];
    const name = atomText(item)?.toUpperCase();
    const value = items[i + 1];
    if (name === 'UID') {
      uid = Number(atomText(value));
    } else if (name === 'BODY' && item && !Array.isArray(item) && isSection(item, section)) {
      const content = value && !Array.isArray(value) ? value.value : undefined;
      source = Buffer.isBuffer(content) ? content : Buffer.from(atomText(value) ?? '', 'utf8');
    }
  }
  if (uid === undefined || !Number.isSafeInteger(uid) || source === undefined) {
    return undefined;
  }
  return { uid, source };
}

// Whether a FETCH item is `BODY[]` (no section wanted) or `BODY[section]`.
function isSection(item: ImapAttribute, section: string | undefined): boolean {
  const parts = item === null || Array.isArray(item) ? undefined : item.section;
  if (section === undefined) {
    return parts?.length === 0;
  }
  return parts?.length === 1 && atomText(parts[0])?.toUpperCase() === section;
}

function toModseq(text: string | undefined): bigint | undefined {
  return text !== undefined && /^\d+$/.test(text) ? BigInt(text) : undefined;
}

// `* LIST (\HasNoChildren) "." orders.default`
function parseListResponse(untagged: ImapResponse): ListedMailbox | undefined {
  const [flags, delimiter, name] = untagged.attributes ?? [];
  const path = atomText(name);
  if (path === undefined) {
    return undefined;
  }
  const flagList: ImapAttributeList = Array.isArray(flags) ? flags : [];
  return {
    path,
    delimiter: atomText(delimiter),
    flags: new Set(flagList.map(atomText).filter((flag) => flag !== undefined)),
  };
}

function atomText(attribute: ImapAttribute | undefined): string | undefined {
  if (!attribute || Array.isArray(attribute)) {
    return undefined;
  }
  const value = attribute.value;
  if (typeof value === 'string') {
    return value;
  }
  if (Buffer.isBuffer(value)) {
    return value.toString('utf8');
  }
  return typeof value === 'number' ? String(value) : undefined;
}

function atom(value: string): ImapAttribute {
  return { type: 'ATOM', value };
}

function string(value: string): ImapAttribute {
  return { type: 'STRING', value };
}

function sequence(uids: number[]): ImapAttribute {
  return { type: 'SEQUENCE', value: formatUidSet(uids) };
}

/** The fields of a fetched header block, unfolded, by lower-case name (the last one wins). */
export function headerFields(block: Buffer | undefined): Map<string, string> {
  const fields = new Map<string, string>();
  const text = (block?.toString('latin1') ?? '').replace(/\r?\n[ \t]+/g, ' ');
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0) {
      fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
  }
  return fields;
}

/** One message's fields of interest, as readFields() returns them. */
export interface FieldsOfMessage {
  uid: number;
  /** INTERNALDATE in ms since the epoch; NaN when the server sent none. */
  storedMs: number;
  fields: Map<string, string>;
}

/**
 * Selects `mailbox` and reads the header fields `names` of every message in it: for the small
 * bookkeeping mailboxes (heartbeats, key turns). None when the mailbox does not exist.
 */
export async function readFields(
  client: ImapFlow,
  mailbox: string,
  names: string[],
): Promise<FieldsOfMessage[]> {
  try {
    await client.mailboxOpen(mailbox);
  } catch (err) {
    if (isMissingMailbox(err)) {
      return [];
    }
    throw err;
  }
  if (!client.mailbox || client.mailbox.exists === 0) {
    return [];
  }
  const fetched = await client.fetchAll(
    '1:*',
    { uid: true, internalDate: true, headers: names },
    { uid: true },
  );
  return fetched.map((message) => ({
    uid: message.uid,
    storedMs: message.internalDate ? new Date(message.internalDate).getTime() : NaN,
    fields: headerFields(message.headers),
  }));
}

/** Selects `mailbox`; false when it does not exist. */
export async function selectIfExists(client: ImapFlow, mailbox: string): Promise<boolean> {
  try {
    await client.mailboxOpen(mailbox);
    return true;
  } catch (err) {
    if (isMissingMailbox(err)) {
      return false;
    }
    throw err;
  }
}

/** An INTERNALDATE in ms since the epoch; 0 when the server sent none. */
export function internalDateMs(internalDate: Date | string | undefined): number {
  const at = internalDate === undefined ? NaN : new Date(internalDate).getTime();
  return Number.isFinite(at) ? at : 0;
}
