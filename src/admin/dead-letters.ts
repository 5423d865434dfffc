// The operator's view of a group's dead letters: list them, show one, hand them back to the
// group (replay), delete them (purge).

import { ERROR_CODES, MailbusError } from '../errors.js';
import { readDeadLetter, replayable } from '../consumer/dead-letter.js';
import type { DeadLetterInfo } from '../consumer/dead-letter.js';
import type { Place, Store, StoredMessage } from '../store/store.js';

export interface DeadLetter extends Omit<DeadLetterInfo, 'original'> {
  /** Names the dead letter in its mailbox (a file name or UID). */
  ref: string;
  location: string;
  storedAt: Date;
}

export interface DeadLetterDetail extends DeadLetter {
  /** The original message, as it was stored before its last attempt. */
  original: Buffer;
  /** The whole report, as a mail client shows it. */
  report: Buffer;
}

/** Told after each step of a long operation: `done` of `total` are finished. */
export type ProgressListener = (done: number, total: number) => void;

/** Dead letters a purge deletes per step. */
const PURGE_BATCH = 500;

export class DeadLetters {
  private readonly place: Place;

  constructor(
    private readonly store: Store,
    topic: string,
    group: string,
  ) {
    this.place = { topic, group, folder: 'junk' };
  }

  /** Every dead letter of the group, oldest first. */
  async list(): Promise<DeadLetter[]> {
    const stored = await this.store.list(this.place);
    const letters: DeadLetter[] = [];
    for (const message of stored) {
      const { id, subject, attempts, lastError, failedAt, ref, location, storedAt } =
        await this.read(message);
      letters.push({ id, subject, attempts, lastError, failedAt, ref, location, storedAt });
    }
    return letters;
  }

  /** One dead letter, by the id of the message it reports on. */
  async show(id: string): Promise<DeadLetterDetail> {
    const found = await this.find([id]);
    return found[0] as DeadLetterDetail;
  }

  /**
   * Hands dead letters back to the group with their attempts reset: the given ids, or all of
   * them. Each original is stored in the group before its dead letter is deleted, so a crash
   * in between duplicates a message and never loses one. Returns how many were replayed.
   */
  async replay(ids: string[] | 'all', onProgress?: ProgressListener): Promise<number> {
    const letters = ids === 'all' ? await this.all() : await this.find(ids);
    let done = 0;
    for (const letter of letters) {
      await this.store.restore(this.place.topic, this.place.group, replayable(letter));
      await this.store.remove(this.place, [letter.ref]);
      done += 1;
      onProgress?.(done, letters.length);
    }
    return letters.length;
  }

  /**
   * Deletes dead letters stored before `before` (all of them by default); returns how many.
   * They are found by a search and deleted a batch at a time, so that progress can be told.
   */
  async purge(before: Date = new Date(8.64e15), onProgress?: ProgressListener): Promise<number> {
    const { topic, group } = this.place;
    const query = { topic, group, states: ['dead' as const], before };
    let total: number | undefined;
    let done = 0;
    for (;;) {
      const page = await this.store.search(query, { limit: PURGE_BATCH });
      total ??= page.total;
      if (page.hits.length === 0) {
        break;
      }
      const removed = await this.store.remove(
        this.place,
        page.hits.map((hit) => hit.ref),
      );
      done += removed;
      onProgress?.(Math.min(done, total), total);
      if (removed === 0) {
        break; // deleted by someone else meanwhile
      }
    }
    return done;
  }

  private async all(): Promise<DeadLetterDetail[]> {
    const stored = await this.store.list(this.place);
    return Promise.all(stored.map((message) => this.read(message)));
  }

  private async find(ids: string[]): Promise<DeadLetterDetail[]> {
    const letters = await this.all();
    return ids.map((id) => {
      const letter = letters.find((candidate) => candidate.id === id || candidate.ref === id);
      if (letter === undefined) {
        throw new MailbusError(
          ERROR_CODES.INVALID_OPTION,
          `no dead letter of ${id} in ${this.place.topic}/${this.place.group}`,
        );
      }
      return letter;
    });
  }

  private async read(message: StoredMessage): Promise<DeadLetterDetail> {
    const info = await readDeadLetter(message.raw);
    return {
      ...info,
      ref: message.ref,
      location: message.location,
      storedAt: message.storedAt,
      report: message.raw,
    };
  }
}
