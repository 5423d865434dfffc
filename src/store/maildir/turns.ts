// Whose turn it is, per ordering key, in one group. Messages that share a key are handed out one
// at a time in publish order: the oldest unsettled message of a key has the turn, and no other
// message of that key is claimed until it is acked or dead-lettered.
//
// A turn is recorded as an empty file in `mailbus-turns/<group mailbox>/`, beside the Maildir++
// folders (a name without a leading dot is no folder to a mail reader), named
// `<key digest>~<message base name>~<consumer>~<random>`. A claimer writes its record before it
// claims (renames) the message, and reads the records after it has listed the group. That order
// is what makes the turn safe across processes without a lock: a claimer that no longer sees a
// message of a key waiting, because another one claimed it, will see that claimer's record.
//
// Several records may name the same message (two claimers reached for it; one lost the rename
// and removes its own). A record names the message by its base name, which it keeps through
// claims, lease recovery and promotion; a retry that rewrites the message under a new name
// records the new name before the old one goes.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { errnoOf, listDir, storageError } from './folders.js';

const SEPARATOR = '~';

export interface TurnRecord {
  keyDigest: string;
  base: string;
  /** The record's file: what removeRecord() takes. */
  path: string;
  /** When it was written, in ms since the epoch. */
  writtenMs: number;
}

export class KeyTurns {
  constructor(
    /** The folder of this group's records. */
    readonly dir: string,
    private readonly consumer: string,
  ) {}

  ensure(): void {
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw storageError(`cannot make the turns folder ${this.dir}`, err);
    }
  }

  /** The messages that hold a turn, by key digest. */
  holders(): Map<string, Set<string>> {
    const holders = new Map<string, Set<string>>();
    for (const record of this.records(false)) {
      const bases = holders.get(record.keyDigest) ?? new Set<string>();
      bases.add(record.base);
      holders.set(record.keyDigest, bases);
    }
    return holders;
  }

  /** Every record; with `withTimes`, each one's write time too (a stat per record). */
  records(withTimes = true): TurnRecord[] {
    const records: TurnRecord[] = [];
    for (const name of listDir(this.dir)) {
      const [keyDigest, base] = name.split(SEPARATOR);
      if (keyDigest === undefined || base === undefined) {
        continue;
      }
      const path = join(this.dir, name);
      records.push({ keyDigest, base, path, writtenMs: withTimes ? mtimeMs(path) : 0 });
    }
    return records;
  }

  /** Records that `base` has the turn of its key; returns the record's path. */
  write(keyDigest: string, base: string): string {
    const random = randomBytes(4).toString('hex');
    const name = [keyDigest, base, this.consumer, random].join(SEPARATOR);
    const path = join(this.dir, name);
    try {
      fs.writeFileSync(path, '', { flag: 'wx', mode: 0o600 });
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') {
        throw storageError(`cannot record the turn of ${base}`, err);
      }
      this.ensure(); // removed by hand: make it again
      fs.writeFileSync(path, '', { flag: 'wx', mode: 0o600 });
    }
    return path;
  }

  removeRecord(path: string): void {
    fs.rmSync(path, { force: true });
  }

  /** Ends the turn of `base`: removes every record that names it, whoever wrote it. */
  end(keyDigest: string, base: string): void {
    const prefix = `${keyDigest}${SEPARATOR}${base}${SEPARATOR}`;
    for (const name of listDir(this.dir)) {
      if (name.startsWith(prefix)) {
        fs.rmSync(join(this.dir, name), { force: true });
      }
    }
  }
}

function mtimeMs(path: string): number {
  try {
    return fs.statSync(path).mtimeMs;
  } catch {
    return Date.now(); // just removed: too young to be judged stale
  }
}
