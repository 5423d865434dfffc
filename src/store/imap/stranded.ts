// Messages stranded with a keyword that marks them as taken: a claimer that died between its
// conditional STORE of CLAIM_KEYWORD and its MOVE leaves the message in the group mailbox where
// no claim will pick it again; a promoter that died likewise leaves PROMOTE_KEYWORD on a message
// in Scheduled. recover() finds such messages and frees them.
//
// How a stranded message is told from one being claimed right now: IMAP keeps no time of a flag
// change, so it is watched. A message that carries the keyword with the same MODSEQ in looks
// at least a lease apart has been left alone that long, which a live claimer never does (its
// STORE and MOVE are a few milliseconds apart). It is freed with a conditional STORE that takes
// the keyword away UNCHANGEDSINCE the MODSEQ of the last look, so a message that anyone touched
// meanwhile is left as it is.
//
// The race this accepts: a claimer that stalled for longer than the lease between its STORE
// and its MOVE (a process stopped in a debugger, a VM paused) and then resumes still moves the
// message, which may by then have been claimed again by someone else: the message is handed
// out twice. It is never lost, and freeing nothing instead would lose it for good.

import type { ImapFlow } from 'imapflow';
import type { Logger } from '../../log.js';
import { formatUidSet, searchAllUids, storeKeywordUnchangedSince } from './commands.js';

/** Messages looked at per call: bounds one FETCH; the rest wait for the next recover(). */
export const STRANDED_MAX_MESSAGES = 1_000;

interface Sighting {
  modseq: bigint;
  sinceMs: number;
}

export class StrandedWatch {
  // By mailbox, UIDVALIDITY and UID: a recreated mailbox reuses UIDs for other messages.
  private readonly sightings = new Map<string, Sighting>();

  constructor(private readonly log: Logger) {}

  /**
   * Frees the messages of the selected mailbox that have carried `keyword`, unchanged, for at
   * least `leaseMs`; returns how many it freed. Needs CONDSTORE enabled on the session.
   */
  async free(client: ImapFlow, keyword: string, leaseMs: number, nowMs: number): Promise<number> {
    const mailbox = client.mailbox;
    if (!mailbox) {
      return 0;
    }
    const prefix = `${mailbox.path}\u0000${mailbox.uidValidity}\u0000`;
    const marked = (await searchAllUids(client, ['KEYWORD', keyword, 'UNDELETED'])).slice(
      0,
      STRANDED_MAX_MESSAGES,
    );
    const states =
      marked.length === 0
        ? []
        : await client.fetchAll(formatUidSet(marked), { uid: true, flags: true }, { uid: true });

    // Sightings of messages that lost the keyword or left are forgotten.
    const current = new Set<string>();
    const stale: { uid: number; modseq: bigint }[] = [];
    for (const state of states) {
      if (!state.flags?.has(keyword) || state.modseq === undefined) {
        continue;
      }
      const key = prefix + state.uid;
      current.add(key);
      const seen = this.sightings.get(key);
      if (!seen || seen.modseq !== state.modseq) {
        this.sightings.set(key, { modseq: state.modseq, sinceMs: nowMs });
      } else if (nowMs - seen.sinceMs >= leaseMs) {
        stale.push({ uid: state.uid, modseq: state.modseq });
      }
    }
    for (const key of [...this.sightings.keys()]) {
      if (key.startsWith(prefix) && !current.has(key)) {
        this.sightings.delete(key);
      }
    }
    if (stale.length === 0) {
      return 0;
    }

    // The MODSEQs come from the FETCH above: any change after it gets a higher one.
    const highest = stale.reduce((max, { modseq }) => (modseq > max ? modseq : max), 0n);
    const uids = stale.map(({ uid }) => uid);
    const result = await storeKeywordUnchangedSince(client, uids, keyword, highest, 'remove');
    const freed = uids.filter(
      (uid) => !result.modified.has(uid) && (result.updated.size === 0 || result.updated.has(uid)),
    );
    for (const uid of freed) {
      this.sightings.delete(prefix + uid);
    }
    this.log.warn(
      { event: 'stranded.freed', mailbox: mailbox.path, keyword, count: freed.length },
      `freed ${freed.length} messages left with ${keyword} for over ${leaseMs} ms`,
    );
    return freed.length;
  }
}
