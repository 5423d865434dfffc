// Group commit for single publishes: while one store append of a topic is under way, the
// publishes that arrive meanwhile wait and then go to the store together, in one append. A
// publish on a quiet queue goes out at once, alone; under load, one append (one fsync of the
// folders, one MULTIAPPEND) carries many messages. Each publish still resolves only once its
// own message is stored, and a failed append rejects every publish it carried.

import type { ComposedMessage } from '../message/compose.js';

/** Most messages one append carries: bounds the work a failed append takes back. */
export const GROUP_COMMIT_MAX = 256;

interface Waiting {
  message: ComposedMessage;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class GroupCommit {
  private waiting: Waiting[] = [];
  private running = false;

  constructor(private readonly append: (messages: ComposedMessage[]) => Promise<void>) {}

  /** Resolves once `message` is stored, alone or with the others that waited beside it. */
  add(message: ComposedMessage): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ message, resolve, reject });
      if (!this.running) {
        void this.drain();
      }
    });
  }

  /** True while an append runs or publishes wait for one. */
  get busy(): boolean {
    return this.running || this.waiting.length > 0;
  }

  private async drain(): Promise<void> {
    this.running = true;
    while (this.waiting.length > 0) {
      const batch = this.waiting.splice(0, GROUP_COMMIT_MAX);
      try {
        await this.append(batch.map((entry) => entry.message));
        for (const entry of batch) {
          entry.resolve();
        }
      } catch (err) {
        for (const entry of batch) {
          entry.reject(err);
        }
      }
    }
    this.running = false;
  }
}
