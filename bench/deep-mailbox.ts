// What Dovecot itself charges per claim as a mailbox gets deep: the raw IMAP commands of one
// claim round, timed on a mailbox of a shallow and of a deep backlog, for each storage format.
// No mailbus code runs in the measured loop; it is the floor under the IMAP store's consume
// rate at a deep backlog (docs/benchmarks.md).
//
//   npm run bench:deep                                  # 20,000 and 100,000, maildir and sdbox
//   npm run bench:deep -- --depths 5000,50000 --formats sdbox
//
// Each round, as a claimer does: a SEARCH of the lowest 16 waiting messages (bounded to the
// 1,024 UIDs above the last round's lowest), a STORE of the claim keyword on them, a FETCH of
// their texts and a MOVE into an in-progress mailbox; a second session changes the flags of
// one other message per round, as other consumers' claims do.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ImapFlow } from 'imapflow';
import { appendMessages, formatUidSet } from '../src/store/imap/commands.js';
import type { MailFormat, MailServers } from '../test/servers/mail-servers.js';
import { machine, storageOf } from './environment.js';
import { table } from './report.js';
import { now } from './timing.js';

/** Messages per MULTIAPPEND while filling. */
const FILL_BATCH = 500;

/** Claims per round, and rounds timed per depth (after WARM_ROUNDS untimed ones). */
const PICKS = 16;
const ROUNDS = 150;
const WARM_ROUNDS = 10;

const COMMANDS = ['search', 'store', 'fetch', 'move'] as const;
type Command = (typeof COMMANDS)[number];

interface Figures {
  format: MailFormat;
  depth: number;
  msPerCommand: Record<Command, number>;
  roundsPerSecond: number;
}

function log(text: string): void {
  process.stderr.write(`[deep ${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

function messageText(n: number): Buffer {
  const body = JSON.stringify({ orderId: n, note: 'x'.repeat(200) });
  return Buffer.from(
    `Message-ID: <deep-${n}@bench>\r\nSubject: order ${n}\r\n` +
      `Content-Type: application/json\r\n\r\n${body}\r\n`,
  );
}

async function session(servers: MailServers, user: string, password: string): Promise<ImapFlow> {
  const { info } = servers;
  const client = new ImapFlow({
    host: info.host,
    port: info.imapPort,
    secure: false,
    auth: { user, pass: password },
    tls: { ca: fs.readFileSync(info.caFile, 'utf8') },
    logger: false,
  });
  await client.connect();
  return client;
}

async function fill(client: ImapFlow, mailbox: string, depth: number): Promise<void> {
  const started = now();
  await client.mailboxCreate(mailbox);
  for (let n = 0; n < depth; n += FILL_BATCH) {
    const batch = Array.from({ length: Math.min(FILL_BATCH, depth - n) }, (_, i) => ({
      raw: messageText(n + i),
      flags: [],
    }));
    await appendMessages(client, mailbox, batch);
  }
  log(`  filled ${depth} in ${((now() - started) / 1000).toFixed(1)} s`);
}

async function timed<T>(spent: Record<Command, number>, command: Command, task: () => Promise<T>) {
  const started = now();
  const result = await task();
  spent[command] += now() - started;
  return result;
}

/** The timed claim rounds on a mailbox of `depth` messages. */
async function claimRounds(claimer: ImapFlow, other: ImapFlow, mailbox: string) {
  const spent: Record<Command, number> = { search: 0, store: 0, fetch: 0, move: 0 };
  await claimer.mailboxOpen(mailbox);
  await other.mailboxOpen(mailbox);
  const target = `${mailbox}.In-Progress`;
  await claimer.mailboxCreate(target);

  let floor = 1;
  let started = 0;
  for (let round = 0; round < WARM_ROUNDS + ROUNDS; round += 1) {
    if (round === WARM_ROUNDS) {
      Object.assign(spent, { search: 0, store: 0, fetch: 0, move: 0 });
      started = now();
    }
    const criteria = {
      uid: `${floor}:${floor + 1_023}`,
      unKeyword: '$MailbusClaimed',
      deleted: false,
    };
    const uids = await timed(spent, 'search', async () => {
      const found = (await claimer.search(criteria, { uid: true })) || [];
      return found.slice(0, PICKS);
    });
    if (uids.length === 0) {
      throw new Error(`no messages left in ${mailbox} after ${round} rounds`);
    }
    floor = uids[0]!;
    const set = formatUidSet(uids);

    await timed(spent, 'store', () =>
      claimer.messageFlagsAdd(set, ['$MailbusClaimed'], { uid: true }),
    );
    await timed(spent, 'fetch', () => claimer.fetchAll(set, { source: true }, { uid: true }));
    await timed(spent, 'move', () => claimer.messageMove(set, target, { uid: true }));
    // Another consumer's change, which the claimer's next command syncs.
    const last = uids.at(-1)! + PICKS * 4;
    await other.messageFlagsAdd(String(last), ['\\Seen'], { uid: true });
  }

  const seconds = (now() - started) / 1000;
  const msPerCommand = Object.fromEntries(
    COMMANDS.map((command) => [command, spent[command] / ROUNDS]),
  ) as Record<Command, number>;
  return { msPerCommand, roundsPerSecond: ROUNDS / seconds };
}

function figuresTable(figures: Figures[]): string {
  const header = ['format', 'waiting', ...COMMANDS.map((c) => `${c} ms`), 'claims/s'];
  const rows = figures.map((f) => [
    f.format,
    f.depth.toLocaleString('en-US'),
    ...COMMANDS.map((c) => f.msPerCommand[c].toFixed(2)),
    Math.round(f.roundsPerSecond * PICKS).toLocaleString('en-US'),
  ]);
  return table(header, rows);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      depths: { type: 'string', default: '20000,100000' },
      formats: { type: 'string', default: 'maildir,sdbox' },
      json: { type: 'boolean', default: false },
    },
  });
  const depths = values.depths.split(',').map(Number);
  if (depths.some((d) => !Number.isSafeInteger(d) || d < WARM_ROUNDS * PICKS + ROUNDS * PICKS)) {
    throw new Error(
      `--depths: each must be a whole number of at least ${(WARM_ROUNDS + ROUNDS) * PICKS}`,
    );
  }
  const formats = values.formats.split(',') as MailFormat[];
  if (formats.some((f) => f !== 'maildir' && f !== 'sdbox')) {
    throw new Error('--formats: choose from maildir, sdbox');
  }

  const { startMailServers } = await import('../test/servers/mail-servers.js');
  const servers = await startMailServers();
  const figures: Figures[] = [];
  try {
    for (const format of formats) {
      const user = `deep-${format}`;
      const password = `pw-${randomBytes(9).toString('base64url')}`;
      const root = path.join(path.dirname(servers.info.maildir), user);
      await servers.addUser(user, password, root, format);
      log(`${format} on ${storageOf(root)}`);
      for (const depth of depths) {
        const claimer = await session(servers, user, password);
        const other = await session(servers, user, password);
        try {
          const mailbox = `deep${depth}`;
          await fill(claimer, mailbox, depth);
          figures.push({ format, depth, ...(await claimRounds(claimer, other, mailbox)) });
        } finally {
          await Promise.all([claimer.logout(), other.logout()]);
        }
      }
    }
  } finally {
    await servers.stop();
  }

  const { cores, cpu, node, loadAverage } = machine();
  const where = `${cores} cores (${cpu}), Node ${node}, load average ${loadAverage.join(' ')}`;
  process.stderr.write(`${where}\n${figuresTable(figures)}\n`);
  if (values.json) {
    for (const row of figures) {
      process.stdout.write(`${JSON.stringify(row)}\n`);
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
