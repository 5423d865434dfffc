// The operator's view of a group's quarantine: list what failed verification and why, show one
// message, release it back to the group. Releasing is a decision a person makes; a verifying
// consumer checks a released message again unless the release seals it (see security/seal.ts).

import { ERROR_CODES, MailbusError } from '../errors.js';
import { readQuarantined, releasedCopy } from '../security/quarantine.js';
import type { QuarantineInfo } from '../security/quarantine.js';
import type { Place, Store, StoredMessage } from '../store/store.js';

export interface QuarantinedMessage extends QuarantineInfo {
  /** Names the message in its mailbox (a file name or UID). */
  ref: string;
  location: string;
  storedAt: Date;
}

export interface QuarantinedDetail extends QuarantinedMessage {
  /** The message as it is stored in quarantine, reason fields included. */
  raw: Buffer;
}

/** Rewrites a message on its way out of quarantine: how a release vouches for it. */
export type ReleaseStamp = (raw: Buffer, topic: string) => Promise<Buffer> | Buffer;

export class Quarantine {
  private readonly place: Place;

  constructor(
    private readonly store: Store,
    topic: string,
    group: string,
    private readonly stamp?: ReleaseStamp,
  ) {
    this.place = { topic, group, folder: 'quarantine' };
  }

  /** Every quarantined message of the group, oldest first. */
  async list(): Promise<QuarantinedMessage[]> {
    const all = await this.all();
    return all.map(({ raw: _raw, ...message }) => message);
  }

  /** One quarantined message, by its id or ref. */
  async show(id: string): Promise<QuarantinedDetail> {
    const [found] = await this.find([id]);
    return found as QuarantinedDetail;
  }

  /**
   * Hands messages back to the group's waiting messages without the quarantine fields. The
   * copy is stored in the group before the quarantined one is deleted, so a crash in between
   * duplicates a message and never loses one. Returns how many were released.
   */
  async release(ids: string[]): Promise<number> {
    const found = await this.find(ids);
    for (const message of found) {
      const original = releasedCopy(message.raw);
      const raw = this.stamp ? await this.stamp(original, this.place.topic) : original;
      await this.store.restore(this.place.topic, this.place.group, raw);
      await this.store.remove(this.place, [message.ref]);
    }
    return found.length;
  }

  private async all(): Promise<QuarantinedDetail[]> {
    const stored = await this.store.list(this.place);
    return Promise.all(stored.map((message) => this.read(message)));
  }

  private async find(ids: string[]): Promise<QuarantinedDetail[]> {
    const all = await this.all();
    return ids.map((id) => {
      const found = all.find((message) => message.id === id || message.ref === id);
      if (found === undefined) {
        throw new MailbusError(
          ERROR_CODES.INVALID_OPTION,
          `no quarantined message ${id} in ${this.place.topic}/${this.place.group}`,
        );
      }
      return found;
    });
  }

  private async read(message: StoredMessage): Promise<QuarantinedDetail> {
    const info = await readQuarantined(message.raw);
    return {
      ...info,
      ref: message.ref,
      location: message.location,
      storedAt: message.storedAt,
      raw: message.raw,
    };
  }
}
