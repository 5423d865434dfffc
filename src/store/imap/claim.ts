// The exclusive claim of messages in a group mailbox that several consumers share: which
// messages to try for, the conditional STORE that decides who gets them, and the MOVE into the
// winner's in-progress mailbox.
//
// Why a conditional STORE and not MOVE alone: Dovecot implements MOVE as copy plus expunge,
// and expunging a message that another session has already expunged is not an error, so two
// consumers moving the same message both succeed (measured: 5,000 messages raced by 4
// consumers became 5,500-7,500 claims). A STORE with UNCHANGEDSINCE is atomic per message: of
// two sessions that read the same MODSEQ, only the first one's STORE changes the message, and
// the second one is told so in the MODIFIED response code.
//
// Which MODSEQ protects the picks: the SEARCH asks for the highest MODSEQ of what it found
// (the MODSEQ criterion, RFC 7162 section 3.1.5), read in the same snapshot as the UIDs. Every
// change made after that snapshot gets a higher MODSEQ, so a STORE UNCHANGEDSINCE that value
// fails for every pick that anyone touched since the SEARCH, and for no other. That saves the
// FETCH (UID MODSEQ FLAGS) of the picks a claim would otherwise need.
//
// Why the winners are confirmed twice more: a message that another consumer has already
// claimed and moved (expunged) is skipped by the STORE without being named in MODIFIED
// (measured on Dovecot 2.3), so "picks minus MODIFIED" would hand it to us as well. What the
// server did change it reports with an untagged FETCH (MODSEQ), which RFC 7162 requires even
// for .SILENT: only those messages are ours. Last, only messages the MOVE really copied (named
// in its COPYUID) are handed out, which covers a server that reports no FETCH at all.
//
// Why a claim record between the STORE and the MOVE: Dovecot 2.3 sometimes tells two sessions
// that each of them changed the first message of a set (arbiter.ts), so the winners of a STORE
// are confirmed by the order of claim records before they move.
//
// The same conditional STORE, with a keyword of its own, makes the promotion of due scheduled
// messages exclusive (promote.ts): takeExclusively() is the step both share.
//
// Messages with an ordering key are handed out one at a time per key, in publish order: a pick
// with a key is kept only when it holds its key's turn, or when no message holds it and the
// pick is the key's first waiting message (turns.ts). Its turn is recorded before the STORE.
//
// The SEARCH for waiting messages starts at the claimer's floor (window.ts): the messages
// below it were not waiting when it last looked, so a deep backlog costs no more per round. A
// mailbox that holds few messages is searched whole instead, both lists in one SEARCH (each
// list on its own when that one comes back full): that takes the server less time than the
// commands a window needs, and a message that has just arrived in a quiet queue is claimed a
// few round trips sooner.
//
// Each command is a round trip (imapflow sends one at a time), so the headers, sizes, flags
// and texts of what the SEARCHes found come back in one FETCH before the STORE: the first 64
// KiB of each, which is the whole of a usual message. What is read of messages not claimed in
// the end (past the batch, held back by a key's turn, or lost to another consumer), and the
// top of a larger message (read whole once won), is read for nothing: at most 64 KiB each.

import type { ImapFlow } from 'imapflow';
import { ERROR_CODES, MailbusError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { keyDigest, orderingOf } from '../../message/ordering.js';
import {
  creatingMailbox,
  fetchClaimTexts,
  formatUidSet,
  highestUid,
  moveMessages,
  searchUids,
  storeKeywordUnchangedSince,
} from './commands.js';
import type { ClaimText, SearchResult } from './commands.js';
import type { ClaimArbiter } from './arbiter.js';
import type { ImapTurns, TurnClaim } from './turns.js';
import type { WaitingList, WaitingWindow } from './window.js';

/**
 * The keyword that marks a message of a group mailbox as taken. It lives only between the
 * STORE and the MOVE of one claim; a message that keeps it (its claimer died in between) is not
 * offered again. One keyword: Dovecot's maildir keeps at most 26 per mailbox.
 */
export const CLAIM_KEYWORD = '$MailbusClaimed';

/** A message this consumer now holds in its in-progress mailbox. */
export interface ClaimedMessage {
  /** Its UID in the in-progress mailbox. */
  uid: number;
  /** The in-progress mailbox's UIDVALIDITY when the message arrived, from COPYUID. */
  uidValidity: bigint | undefined;
  /** Its text; for an oversized message only its top (see ClaimText). */
  raw: Buffer;
  size: number;
  oversized: boolean;
  /** \Flagged: published with high priority. */
  flagged: boolean;
}

export interface ClaimRound {
  claimed: ClaimedMessage[];
  /** Messages were waiting, but other consumers took the ones this round tried for. */
  contended: boolean;
  /** Messages were waiting, but their keys' turns were held by others: worth a look soon. */
  deferred: boolean;
}

const NO_PICKS: SearchResult = { uids: [], modseq: undefined };

/** The UID range of a claim round's first SEARCH of a list (see searchWaiting). */
const SEARCH_SPAN_UIDS = 1_024;

/**
 * A group mailbox with at most this many messages is searched whole each round: one SEARCH of
 * it (three when it comes back full) costs the server less than the three or more commands a
 * windowed round sends.
 */
export const SHALLOW_MAILBOX_MESSAGES = 512;

/**
 * Picks at most this large are read whole by the FETCH before the STORE; larger ones only once
 * won, so that a pick lost to another consumer costs little.
 */
export const INLINE_TEXT_BYTES = 64 * 1024;

/** Waiting messages of one list, found by one SEARCH or by several, each a snapshot of its own. */
interface FoundList extends SearchResult {
  /**
   * The MODSEQ of the SEARCH that found each UID, when several SEARCHes may have found them;
   * without it, `modseq` is that of the one SEARCH.
   */
  snapshots?: Map<number, bigint>;
}

/** The waiting messages a round found, in the lists it claims them from. */
interface Waiting {
  flagged: FoundList;
  normal: FoundList;
  /** The lists hold every waiting message up to this UID; past it, more may wait unseen. */
  seenThrough: number;
  /**
   * Found by one SEARCH of both lists: `normal` holds them all, flagged ones too, until split()
   * sorts them by the \Flagged of the FETCH that follows.
   */
  unsplit: boolean;
}

/** What the FETCH before the STORE read of each pick. */
interface PickDetails {
  /** Ordering key digest and Message-ID of each pick that has a key. */
  orderings: Map<number, TurnClaim>;
  /** RFC822.SIZE of every pick, so that the claim reads only the texts within the limit. */
  sizes: Map<number, number>;
  /** The picks that carry \Flagged. */
  flagged: Set<number>;
  /** The whole texts of the picks within INLINE_TEXT_BYTES and the size limit. */
  texts: Map<number, ClaimText>;
}

/**
 * One claim attempt on the selected group mailbox: picks up to `max` waiting messages, claims
 * them with a conditional STORE and moves the ones won into `inProgress`.
 */
export async function claimRound(
  client: ImapFlow,
  max: number,
  inProgress: string,
  log: Logger,
  turns: ImapTurns,
  arbiter: ClaimArbiter,
  window: WaitingWindow,
  maxBytes?: number,
): Promise<ClaimRound> {
  // High priority first: flagged waiting messages, then the others, each by lowest UID. Both
  // lists are looked at, since a key's first message may be in either.
  //
  // The session's count of messages, as of the server's last report: claimed and deleted ones
  // too, and maybe behind. A guess at the SEARCH's cost is all it is needed for.
  const exists = client.mailbox ? client.mailbox.exists : Infinity;
  const found =
    exists <= SHALLOW_MAILBOX_MESSAGES
      ? await searchShallow(client, window, max)
      : await searchWindowed(client, window, max);
  const all = [...found.flagged.uids, ...found.normal.uids];
  if (all.length === 0) {
    return { claimed: [], contended: false, deferred: false };
  }

  const details = await fetchDetails(client, all, maxBytes);
  const gate = await gateByTurn(turns, split(found, details.flagged), details.orderings, max);
  const { flagged, normal } = gate;
  if (flagged.uids.length === 0 && normal.uids.length === 0) {
    return { claimed: [], contended: false, deferred: gate.deferred };
  }
  const records = await turns.write([...gate.turns.values()]);
  const recordOf = new Map([...gate.turns.keys()].map((uid, i) => [uid, records[i]]));
  const outcome = await claimPicks(client, { flagged, normal }, inProgress, log, arbiter, {
    maxBytes,
    sizes: details.sizes,
    texts: details.texts,
  });

  // Turns recorded for picks that another consumer won are not ours to keep.
  const kept = new Set(outcome.claimedFrom);
  const lost = [...recordOf].filter(([uid]) => !kept.has(uid)).map(([, record]) => record);
  await turns.remove(lost.filter((record): record is number => record !== undefined));
  return { ...outcome.round, deferred: gate.deferred };
}

/** The picks that may be claimed now, as the turns of their keys allow, and their turns. */
interface Gate {
  flagged: SearchResult;
  normal: SearchResult;
  turns: Map<number, TurnClaim>;
  deferred: boolean;
}

/**
 * Keeps the picks whose keys allow them now: a pick without a key, a pick that holds its key's
 * turn (it came back from a retry, a lost lease, a stopped consumer), and, for a key whose turn
 * no message holds, the key's first waiting message. The turns are read after the SEARCH: a
 * key's earlier message missing from it was claimed, and its claimer's record is then there.
 */
async function gateByTurn(
  turns: ImapTurns,
  found: Waiting,
  orderings: Map<number, TurnClaim>,
  max: number,
): Promise<Gate> {
  if (orderings.size === 0) {
    const capped = capPicks(found.flagged.uids, found.normal.uids, found, max);
    return { ...capped, turns: new Map(), deferred: false };
  }
  const holders = await turns.holders();

  // A waiting message of the same key could hide past what the SEARCH returned.
  const all = [...found.flagged.uids, ...found.normal.uids];
  const seenAll = (uid: number): boolean => uid <= found.seenThrough;
  const firstOfKey = new Map<string, number>();
  for (const uid of all) {
    const digest = orderings.get(uid)?.keyDigest;
    if (digest !== undefined && uid < (firstOfKey.get(digest) ?? Infinity)) {
      firstOfKey.set(digest, uid);
    }
  }

  const turnOf = new Map<number, TurnClaim>();
  let deferred = false;
  const allowed = (uid: number): boolean => {
    const turn = orderings.get(uid);
    if (turn === undefined) {
      return true;
    }
    const holding = holders.get(turn.keyDigest);
    const mine = holding
      ? holding.has(turn.messageId)
      : firstOfKey.get(turn.keyDigest) === uid && seenAll(uid);
    const taken = [...turnOf.values()].some((other) => other.keyDigest === turn.keyDigest);
    if (!mine || taken) {
      deferred = true;
      return false;
    }
    turnOf.set(uid, turn);
    return true;
  };
  const flagged = found.flagged.uids.filter(allowed);
  const normal = found.normal.uids.filter(allowed);
  const capped = capPicks(flagged, normal, found, max);
  for (const uid of turnOf.keys()) {
    if (!capped.flagged.uids.includes(uid) && !capped.normal.uids.includes(uid)) {
      turnOf.delete(uid);
    }
  }
  return { ...capped, turns: turnOf, deferred };
}

/** At most `max` picks, flagged first, each list with the MODSEQ that protects its picks. */
function capPicks(
  flagged: number[],
  normal: number[],
  found: { flagged: FoundList; normal: FoundList },
  max: number,
): { flagged: SearchResult; normal: SearchResult } {
  const keptFlagged = flagged.slice(0, max);
  const keptNormal = normal.slice(0, max - keptFlagged.length);
  return {
    flagged: protectedPicks(found.flagged, keptFlagged),
    normal: protectedPicks(found.normal, keptNormal),
  };
}

/**
 * The picks kept of a list, with the lowest MODSEQ of the SEARCHes that found them: a pick is
 * safe under any MODSEQ at or below that of its own snapshot. Only the SEARCHes of kept picks
 * count. A SEARCH whose picks were all deferred (their keys' turns are held) may be older than
 * every later one, and its MODSEQ would then make every other pick lose its STORE, each round.
 */
function protectedPicks(list: FoundList, uids: number[]): SearchResult {
  if (uids.length === 0) {
    return NO_PICKS;
  }
  if (list.snapshots === undefined) {
    return { uids, modseq: list.modseq };
  }
  // A pick whose SEARCH reported no MODSEQ leaves the list to a fresh FETCH (takeExclusively).
  const snapshots = uids.map((uid) => list.snapshots?.get(uid));
  return { uids, modseq: lowest(snapshots) };
}

/** The lowest of `modseqs`; undefined when there are none or one is missing. */
function lowest(modseqs: Array<bigint | undefined>): bigint | undefined {
  if (modseqs.length === 0 || modseqs.some((modseq) => modseq === undefined)) {
    return undefined;
  }
  return (modseqs as bigint[]).reduce((low, modseq) => (modseq < low ? modseq : low));
}

/**
 * One FETCH of the picks: the ordering key and Message-ID of each that has a key (from its
 * header), its size, its flags, and the whole text of each small enough (see
 * INLINE_TEXT_BYTES). A text is read from its start up to that limit: for a larger message
 * what comes back is only its top, which is dropped, and the text is read once won.
 */
async function fetchDetails(
  client: ImapFlow,
  uids: number[],
  maxBytes: number | undefined,
): Promise<PickDetails> {
  const details: PickDetails = {
    orderings: new Map(),
    sizes: new Map(),
    flagged: new Set(),
    texts: new Map(),
  };
  const inlineBytes = Math.min(INLINE_TEXT_BYTES, maxBytes ?? Infinity);
  const fetched = await client.fetchAll(
    formatUidSet(uids),
    {
      uid: true,
      size: true,
      flags: true,
      headers: ['X-Mailbus-Key', 'Message-ID'],
      source: { start: 0, maxLength: inlineBytes },
    },
    { uid: true },
  );

  for (const message of fetched) {
    if (message.flags?.has('\\Flagged')) {
      details.flagged.add(message.uid);
    }
    const size = message.size;
    if (size !== undefined) {
      details.sizes.set(message.uid, size);
      if (message.source && size <= inlineBytes && message.source.length === size) {
        details.texts.set(message.uid, { raw: message.source, size, oversized: false });
      }
    }
    const ordering = message.headers ? orderingOf(message.headers) : undefined;
    if (ordering !== undefined) {
      details.orderings.set(message.uid, {
        keyDigest: keyDigest(ordering.key),
        messageId: ordering.messageId,
      });
    }
  }
  return details;
}

/** The conditional STOREs and the MOVE of one round's picks. */
async function claimPicks(
  client: ImapFlow,
  picks: { flagged: SearchResult; normal: SearchResult },
  inProgress: string,
  log: Logger,
  arbiter: ClaimArbiter,
  limit: {
    maxBytes: number | undefined;
    sizes: Map<number, number>;
    texts: Map<number, ClaimText>;
  },
): Promise<{ round: Omit<ClaimRound, 'deferred'>; claimedFrom: number[] }> {
  const stored = await takeAll(client, picks);
  const lost = { round: { claimed: [], contended: true }, claimedFrom: [] };
  if (stored.length === 0) {
    return lost;
  }
  const { kept: won, record } = await arbitrateClaim(client, arbiter, stored);
  if (won.length === 0) {
    arbiter.finished(record);
    return lost;
  }

  // The texts the FETCH before the STORE did not read whole are read now, once won.
  const texts = limit.texts;
  const unread = won.filter((uid) => !texts.has(uid));
  for (const [uid, text] of await fetchClaimTexts(client, unread, limit.maxBytes, limit.sizes)) {
    texts.set(uid, text);
  }
  const present = won.filter((uid) => texts.has(uid));
  if (present.length === 0) {
    arbiter.finished(record);
    return lost;
  }

  // Safe now: the STORE made this consumer the only one that tries to move these messages. A
  // recovering consumer that judged this one dead may have taken its in-progress mailbox away:
  // the MOVE then recreates it, and the messages stay ours (they still carry the keyword).
  const moved = await creatingMailbox(client, inProgress, () =>
    moveMessages(client, present, inProgress),
  );
  arbiter.finished(record);
  const isFlagged = new Set(picks.flagged.uids);
  const claimed: ClaimedMessage[] = [];
  const claimedFrom: number[] = [];
  for (const uid of present) {
    const target = moved.targets.get(uid);
    const text = texts.get(uid);
    if (target !== undefined && text !== undefined) {
      claimedFrom.push(uid);
      claimed.push({
        uid: target,
        uidValidity: moved.uidValidity,
        ...text,
        flagged: isFlagged.has(uid),
      });
    }
  }
  if (claimed.length < won.length) {
    log.debug(
      { tried: won.length, claimed: claimed.length },
      'claimed fewer messages than the STORE won: the rest were gone',
    );
  }
  return { round: { claimed, contended: claimed.length === 0 }, claimedFrom };
}

/**
 * The conditional STOREs of both lists: each SEARCH is a snapshot of its own, so each list is
 * protected by the MODSEQ read with it (every change made after a snapshot gets a MODSEQ above
 * the highest it reported). Lists with the same MODSEQ (a shallow round's one SEARCH) share one
 * STORE: the same UNCHANGEDSINCE protects both.
 */
async function takeAll(
  client: ImapFlow,
  picks: { flagged: SearchResult; normal: SearchResult },
): Promise<number[]> {
  const { flagged, normal } = picks;
  if (flagged.uids.length > 0 && normal.uids.length > 0 && flagged.modseq === normal.modseq) {
    const both = { uids: [...flagged.uids, ...normal.uids], modseq: flagged.modseq };
    return await takeExclusively(client, both, CLAIM_KEYWORD);
  }
  return [
    ...(await takeExclusively(client, flagged, CLAIM_KEYWORD)),
    ...(await takeExclusively(client, normal, CLAIM_KEYWORD)),
  ];
}

/**
 * Records the UIDs a STORE won on the selected mailbox and keeps those no earlier claim record
 * names (arbiter.ts). The record is the caller's to hand back with finished() after its MOVE.
 */
export async function arbitrateClaim(
  client: ImapFlow,
  arbiter: ClaimArbiter,
  won: number[],
): Promise<{ kept: number[]; record: number }> {
  const mailbox = client.mailbox;
  if (!mailbox) {
    throw new MailbusError(ERROR_CODES.PROTOCOL, 'a claim needs its mailbox selected');
  }
  return await arbiter.arbitrate(
    client,
    { path: mailbox.path, uidValidity: mailbox.uidValidity },
    won,
  );
}

/**
 * The waiting messages of a mailbox of few messages (SHALLOW_MAILBOX_MESSAGES): the lowest
 * `max` of both lists in one SEARCH of the whole mailbox, split by flag once fetched. When that
 * SEARCH comes back full, more may wait past it, of either list: then each list is searched on
 * its own (one SEARCH of each from UID 1), so that flagged messages and the messages of keys
 * whose turns are free are seen as far as `max` of each list reaches.
 */
async function searchShallow(
  client: ImapFlow,
  window: WaitingWindow,
  max: number,
): Promise<Waiting> {
  // The window's floors are not kept up here: a round on a deep mailbox starts again from 1.
  window.reset();
  const partial = searchesPartially(client);
  const waiting = ['UID', '1:*', 'UNKEYWORD', CLAIM_KEYWORD, 'UNDELETED'];

  const both = await searchOnSyncedView(client, () => searchUids(client, waiting, max, partial));
  if (both.uids.length < max) {
    return { flagged: NO_PICKS, normal: both, seenThrough: Infinity, unsplit: true };
  }
  const flagged = await searchUids(client, [...waiting, 'FLAGGED'], max, partial);
  const normal = await searchUids(client, [...waiting, 'UNFLAGGED'], max, partial);
  return { flagged, normal, seenThrough: seenThrough([flagged, normal], max), unsplit: false };
}

/** The highest UID up to which lists of at most `max` picks hold every waiting message. */
function seenThrough(lists: SearchResult[], max: number): number {
  // A list that came back full may have more waiting past its last UID.
  return Math.min(...lists.map(({ uids }) => (uids.length < max ? Infinity : Math.max(...uids))));
}

/**
 * Runs `search`, and once more when the server reported new mail with its answer. A SEARCH
 * answers from the session's view of the mailbox, which takes in what other sessions stored
 * only as the command ends (the EXISTS that comes with the answer): without a second look,
 * mail stored before the claim began could be missed by it (the claimer's wake on the EXISTS
 * would bring it to the next claim, but a caller may not make one). The windowed round's first
 * command is its sync point instead (searchWindowed).
 */
async function searchOnSyncedView(
  client: ImapFlow,
  search: () => Promise<SearchResult>,
): Promise<SearchResult> {
  let arrived = false;
  const onExists = (event: { count: number; prevCount: number }): void => {
    arrived ||= event.count > event.prevCount;
  };
  client.on('exists', onExists);
  try {
    const first = await search();
    return arrived ? await search() : first;
  } finally {
    client.off('exists', onExists);
  }
}

/**
 * The waiting messages of a mailbox of many: the lowest `max` of each list from the window's
 * floors (see searchWaiting).
 */
async function searchWindowed(
  client: ImapFlow,
  window: WaitingWindow,
  max: number,
): Promise<Waiting> {
  // The highest UID first: flag changes that other sessions made meanwhile come with its
  // answer, and this round's floors already heed them (window.ts).
  const top = await highestUid(client, window.lastTop);
  window.startRound(client.mailbox ? client.mailbox.uidValidity : undefined, top);
  const flagged = await searchWaiting(client, window, 'flagged', max, top);
  const normal = await searchWaiting(client, window, 'normal', max, top);
  return { flagged, normal, seenThrough: seenThrough([flagged, normal], max), unsplit: false };
}

/** The lists of `found`, with a single SEARCH's result split by the flags fetched since. */
function split(found: Waiting, flagged: Set<number>): Waiting {
  if (!found.unsplit) {
    return found;
  }
  const { uids, modseq } = found.normal;
  return {
    ...found,
    flagged: { uids: uids.filter((uid) => flagged.has(uid)), modseq },
    normal: { uids: uids.filter((uid) => !flagged.has(uid)), modseq },
    unsplit: false,
  };
}

/** Whether the server can send only the first UIDs of a SEARCH (ESEARCH and RFC 5267). */
function searchesPartially(client: ImapFlow): boolean {
  return (
    client.capabilities.has('ESEARCH') &&
    (client.capabilities.has('CONTEXT=SEARCH') || client.capabilities.has('PARTIAL'))
  );
}

/**
 * The lowest `max` UIDs of waiting messages of one list (flagged or not), from the window's
 * floor up to `top` (the mailbox's highest UID, read before), with a MODSEQ that protects
 * them all.
 *
 * The server walks every message of the UID range a SEARCH names, however few it returns, so
 * the range grows from SEARCH_SPAN_UIDS, doubling, until it holds `max` waiting messages or
 * reaches `top` (then open-ended): a backlog above them costs nothing. Each SEARCH is a
 * snapshot of its own, and each UID keeps the MODSEQ of the one that found it: the STORE is
 * made under the lowest of those of the picks kept (protectedPicks). A pick seen in a later
 * snapshot and changed before it then loses its STORE, and is tried again next round.
 */
async function searchWaiting(
  client: ImapFlow,
  window: WaitingWindow,
  list: WaitingList,
  max: number,
  top: number,
): Promise<FoundList> {
  const partial = searchesPartially(client);
  const uids: number[] = [];
  const snapshots = new Map<number, bigint>();

  // The last range is open-ended, and there is always one: a message stored just before this
  // round may be missing from the answer that gave `top` (a session sees new mail once the
  // server has synced it, after a command) and still be in the next one's.
  let low = window.from(list);
  for (let span = SEARCH_SPAN_UIDS; ; span *= 2) {
    const high = low + span - 1;
    const last = high >= top;
    const criteria = [
      'UID',
      last ? `${low}:*` : `${low}:${high}`,
      list === 'flagged' ? 'FLAGGED' : 'UNFLAGGED',
      'UNKEYWORD',
      CLAIM_KEYWORD,
      'UNDELETED',
    ];
    // `low:*` names the last message even when its UID is below `low`: that one was in an
    // earlier range already.
    const found = await searchUids(client, criteria, max - uids.length, partial);
    const fresh = found.uids.filter((uid) => uid >= low);
    uids.push(...fresh);
    if (found.modseq !== undefined) {
      fresh.forEach((uid) => snapshots.set(uid, found.modseq as bigint));
    }
    if (last || uids.length >= max) {
      break;
    }
    low = high + 1;
  }

  const modseq = lowest(uids.map((uid) => snapshots.get(uid)));
  const result = { uids, modseq, snapshots };
  window.searched(list, result, top);
  return result;
}

/**
 * The conditional STORE of `keyword` on `picks`, under their MODSEQ: at or below that of every
 * snapshot they were picked from (protectedPicks). Returns the UIDs this session won.
 */
export async function takeExclusively(
  client: ImapFlow,
  picks: SearchResult,
  keyword: string,
): Promise<number[]> {
  if (picks.uids.length === 0) {
    return [];
  }
  // RFC 7162 requires the MODSEQ in the SEARCH answer; from a server that leaves it out, it is
  // fetched, a snapshot later.
  const checked =
    picks.modseq === undefined ? await fetchUntaken(client, picks.uids, keyword) : picks;
  if (checked.uids.length === 0 || checked.modseq === undefined) {
    return [];
  }

  const store = await storeKeywordUnchangedSince(client, checked.uids, keyword, checked.modseq);
  return checked.uids.filter(
    (uid) => !store.modified.has(uid) && (store.updated.size === 0 || store.updated.has(uid)),
  );
}

/**
 * The picks still without `keyword` in a fresh snapshot, with their highest MODSEQ. A pick that
 * another consumer's STORE reached since the SEARCH carries the keyword by now and is left
 * out, so the MODSEQ of that STORE never protects our own.
 */
async function fetchUntaken(
  client: ImapFlow,
  uids: number[],
  keyword: string,
): Promise<SearchResult> {
  const states = await client.fetchAll(
    formatUidSet(uids),
    { uid: true, flags: true },
    { uid: true },
  );
  const fresh = states.filter(
    (state) => !state.flags?.has(keyword) && !state.flags?.has('\\Deleted'),
  );
  const modseq = fresh.reduce<bigint | undefined>(
    (highest, state) =>
      state.modseq !== undefined && (highest === undefined || state.modseq > highest)
        ? state.modseq
        : highest,
    undefined,
  );
  return { uids: fresh.map((state) => state.uid), modseq };
}
