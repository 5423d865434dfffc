// What the IMAP server itself takes for the work under the search bar's searches, measured on a
// plain socket that only counts bytes: the raw limits bench/search.ts compares store.search()
// against. Also one body stream through imapflow with no matching, to tell the server's share
// of a free-text search from the client's parsing.

import * as fs from 'node:fs';
import * as net from 'node:net';
import { ImapFlow } from 'imapflow';
import { streamBodies } from '../src/store/imap/commands.js';
import type { MailServersInfo } from '../test/servers/mail-servers.js';
import { now } from './timing.js';

export interface RawLimit {
  what: string;
  ms: number;
  /** Bytes the server sent for it (for the stream through imapflow: the bodies' bytes). */
  bytes: number;
}

/** Characters kept of the end of what arrived: more than a tagged answer's line. */
const TAIL_CHARS = 4_096;

/**
 * One IMAP session on a plain loopback socket (the private Dovecot offers STARTTLS but does not
 * require it). send() writes one command and resolves when its tagged answer has arrived,
 * having only counted what came before.
 */
class RawSession {
  private readonly socket: net.Socket;
  private tail = '';
  private bytes = 0;
  private waiting: { tag: string; resolve: (bytes: number) => void } | undefined;
  private tags = 0;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  static async open(info: MailServersInfo): Promise<RawSession> {
    const socket = net.connect(info.imapPort, info.host);
    const session = new RawSession(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('data', () => resolve());
      socket.once('error', reject);
    });
    await session.send(`LOGIN ${info.user} ${info.password}`);
    return session;
  }

  async send(command: string): Promise<number> {
    this.tags += 1;
    const tag = `R${this.tags}`;
    this.bytes = 0;
    const answered = new Promise<number>((resolve) => {
      this.waiting = { tag, resolve };
    });
    this.socket.write(`${tag} ${command}\r\n`);
    return await answered;
  }

  close(): void {
    this.socket.end('R0 LOGOUT\r\n');
  }

  // Looks for `\r\nTAG ` in what arrived last (a tagged line with CAPABILITY is long).
  private onData(chunk: Buffer): void {
    this.bytes += chunk.length;
    const kept = chunk.toString('latin1', Math.max(0, chunk.length - TAIL_CHARS));
    this.tail = (this.tail + kept).slice(-TAIL_CHARS);
    const waiting = this.waiting;
    if (
      waiting &&
      new RegExp(`(^|\\r\\n)${waiting.tag} [A-Z]+ [^\\r\\n]*\\r\\n$`).test(this.tail)
    ) {
      this.waiting = undefined;
      waiting.resolve(this.bytes);
    }
  }
}

/** The raw limits of the searches in `mailbox` (the waiting messages of the benchmark's group). */
export async function rawLimits(info: MailServersInfo, mailbox: string): Promise<RawLimit[]> {
  const limits: RawLimit[] = [];
  const session = await RawSession.open(info);
  try {
    await session.send(`EXAMINE ${mailbox}`);
    const timed = async (what: string, command: string) => {
      const started = now();
      const bytes = await session.send(command);
      limits.push({ what, ms: Math.round(now() - started), bytes });
    };
    await timed('SORT (ARRIVAL) of every message', 'UID SORT RETURN (ALL) (ARRIVAL) US-ASCII ALL');
    await timed(
      'SORT of a header (X-Region north)',
      'UID SORT RETURN (ALL) (ARRIVAL) US-ASCII HEADER X-Region north',
    );
    await timed('FETCH INTERNALDATE of every message', 'UID FETCH 1:* (INTERNALDATE)');
    await timed('FETCH BODY.PEEK[TEXT] of every message', 'UID FETCH 1:* (BODY.PEEK[TEXT])');
    await timed('the same again', 'UID FETCH 1:* (BODY.PEEK[TEXT])');
  } finally {
    session.close();
  }

  // The same bodies through imapflow's parser, as the search reads them, matching nothing.
  const client = new ImapFlow({
    host: info.host,
    port: info.imapPort,
    secure: false,
    auth: { user: info.user, pass: info.password },
    tls: { ca: fs.readFileSync(info.caFile) },
    logger: false,
  });
  await client.connect();
  try {
    await client.mailboxOpen(mailbox, { readOnly: true });
    const uids = (await client.search({ all: true }, { uid: true })) || [];
    const started = now();
    let bytes = 0;
    for (let start = 0; start < uids.length; start += 5_000) {
      await streamBodies(client, uids.slice(start, start + 5_000), (_uid, body) => {
        bytes += body.length;
      });
    }
    limits.push({
      what: 'BODY.PEEK[TEXT] through imapflow',
      ms: Math.round(now() - started),
      bytes,
    });
  } finally {
    await client.logout();
  }
  return limits;
}
