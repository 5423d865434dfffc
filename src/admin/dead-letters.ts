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
  async replay(ids: string[] | 'all'): Promise<number> {
    const letters = ids === 'all' ? await this.all() : await this.find(ids);
    for (const letter of letters) {
      await this.store.restore(this.place.topic, this.place.group, replayable(letter));
      await this.store.remove(this.place, [letter.ref]);
    }
    return letters.length;
  }

  /** Deletes dead letters stored before `before` (all of them by default); returns how many. */
  async purge(before: Date = new Date(8.64e15)): Promise<number> {
    return this.store.purge(this.place, before);
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
