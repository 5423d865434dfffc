// The ids of a group's message files, for a search by id that opens no file but its match. A
// Maildir file never changes its text: a retry, a dead letter or a restore writes a new file
// under a new base name, and a claim, an ack or a flag only renames it. So a base name's ids
// (its Message-ID, and for a dead letter the id of the message it reports on) are known for
// good once read, and the index can only ever be missing names, never be wrong.
//
// It is one file per group beside the folders, `mailbus-index/<topic>.<group>`, a line per
// message file: `<base name>\t<id>[\t<id>]`. A search reads the lines other processes added
// since it last looked, reads the heads of the files it does not know, and appends their lines.
// When the file is lost or damaged it is simply rebuilt by the next search; once it names many
// more files than the group holds, a search writes it anew with the ones that are left.

import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { DIR_MODE, FILE_MODE, errnoOf } from './folders.js';

/** A group's index is written anew once it names this many times the files it found. */
const COMPACT_RATIO = 2;

/** Indexes smaller than this are never compacted: they cost nothing to keep. */
const COMPACT_MIN_LINES = 10_000;

export class IdIndex {
  private readonly ids = new Map<string, string[]>();
  private readOffset = 0;
  private inode = -1;
  private lines = 0;
  private readonly pending: string[] = [];

  constructor(readonly path: string) {}

  /** Reads what other processes appended since the last look. */
  refresh(): void {
    let text: string;
    try {
      const fd = fs.openSync(this.path, 'r');
      try {
        const { size, ino } = fs.fstatSync(fd);
        if (ino !== this.inode || size < this.readOffset) {
          // Written anew (by a compaction, or by hand): start over.
          this.ids.clear();
          this.readOffset = 0;
          this.lines = 0;
          this.inode = ino;
        }
        const buffer = Buffer.allocUnsafe(size - this.readOffset);
        const length = fs.readSync(fd, buffer, 0, buffer.length, this.readOffset);
        text = buffer.toString('utf8', 0, length);
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') {
        return; // not made yet, or removed: the scan rebuilds it
      }
      throw err;
    }
    // Only whole lines: a line being appended right now is read next time.
    const end = text.lastIndexOf('\n') + 1;
    this.readOffset += Buffer.byteLength(text.slice(0, end), 'utf8');
    for (const line of text.slice(0, end).split('\n')) {
      const [base, ...ids] = line.split('\t');
      if (base && ids.length > 0) {
        this.ids.set(base, ids);
        this.lines += 1;
      }
    }
  }

  /** The ids of a message file by its base name; undefined when not known yet. */
  get(base: string): string[] | undefined {
    return this.ids.get(base);
  }

  add(base: string, ids: string[]): void {
    // A tab or a line break would break the line; no id a message can have holds one.
    const clean = ids.filter((id) => id !== '' && !/[\t\r\n]/.test(id));
    if (clean.length === 0 || /[\t\r\n]/.test(base)) {
      return;
    }
    this.ids.set(base, clean);
    this.pending.push(`${base}\t${clean.join('\t')}\n`);
  }

  /**
   * Appends the lines learnt since the last flush, or writes the index anew with only the
   * `present` base names (every file the group has now, when the caller knows them) when it has
   * grown far past them. Best effort: the index is a cache.
   */
  flush(present?: Set<string>): void {
    try {
      const stale = present !== undefined && this.lines > present.size * COMPACT_RATIO;
      if (present !== undefined && stale && this.lines > COMPACT_MIN_LINES) {
        this.compact(present);
        return;
      }
      if (this.pending.length === 0) {
        return; // nothing learnt: nothing written, not even the directory
      }
      fs.mkdirSync(dirname(this.path), { recursive: true, mode: DIR_MODE });
      // Counted in `lines` when the next refresh reads them back.
      fs.appendFileSync(this.path, this.pending.splice(0).join(''), { mode: FILE_MODE });
    } catch {
      this.pending.length = 0; // a read-only Maildir: searches still work, reading the files
    }
  }

  private compact(present: Set<string>): void {
    for (const base of [...this.ids.keys()]) {
      if (!present.has(base)) {
        this.ids.delete(base);
      }
    }
    const lines = [...this.ids].map(([base, ids]) => `${base}\t${ids.join('\t')}\n`);
    const tmp = `${this.path}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, lines.join(''), { mode: FILE_MODE });
    fs.renameSync(tmp, this.path);
    this.pending.length = 0;
    this.lines = lines.length;
    const { size, ino } = fs.statSync(this.path);
    this.readOffset = size;
    this.inode = ino;
  }
}

export function idIndexPath(root: string, groupMailbox: string): string {
  return join(root, 'mailbus-index', groupMailbox);
}
