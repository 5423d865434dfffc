// The limits under mailbus, measured in the same run: what the operations one message needs cost
// on this machine when nothing but them runs. For the Maildir, the file-system calls of one
// message's life (deliver, claim, read, ack), batched the way mailbus batches them; for
// Dovecot, the round trips of APPEND, MULTIAPPEND, FETCH and NOOP, the commands of one
// message's life in batches, and how late an IDLE session hears of new mail. A mailbus figure
// divided by its limit says how much of what the machine allows mailbus gets.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { composeMessage } from '../src/message/compose.js';
import {
  appendMessages,
  copyMessages,
  fetchSources,
  moveMessages,
  storeFlags,
} from '../src/store/imap/commands.js';
import { makePayload } from './payload.js';
import { table } from './report.js';
import type { Endpoints } from './systems/system.js';
import { now, percentile, sleep } from './timing.js';

export interface LimitRow {
  type: 'limit';
  /** `maildir-fsync`, `maildir-nofsync` or `dovecot`. */
  mode: string;
  metric: string;
  value: number;
  unit: 'msg/s' | 'op/s' | 'ms';
  /** What was measured, in one sentence. */
  what: string;
}

/** Messages per batch in the batched figures: what mailbus's group commit and claims reach. */
const BATCH = 64;

/** How long each Maildir measurement runs. */
const MAILDIR_MS = 3000;

/** How long each Dovecot round-trip measurement runs. */
const DOVECOT_MS = 3000;

/** Samples of the IDLE and NOOP notice delays. */
const NOTICE_SAMPLES = 8;

function row(mode: string, metric: string, value: number, unit: LimitRow['unit'], what: string) {
  return { type: 'limit' as const, mode, metric, value, unit, what };
}

async function sampleMessage(payloadBytes: number): Promise<Buffer> {
  const composed = await composeMessage(
    'limits',
    { payload: makePayload(0, payloadBytes) },
    { from: 'bench <bench@localhost>', maxMessageBytes: 1 << 26 },
  );
  return composed.raw;
}

/** Runs `step` over and over for `ms`; returns how many units it did per second. */
async function rate(ms: number, step: () => Promise<number>): Promise<number> {
  const started = now();
  let done = 0;
  while (now() - started < ms) {
    done += await step();
  }
  return done / ((now() - started) / 1000);
}

function fsyncDir(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.open(dir, 'r', (err, fd) => {
      if (err) {
        reject(err);
        return;
      }
      fs.fsync(fd, (syncErr) => fs.close(fd, () => (syncErr ? reject(syncErr) : resolve())));
    });
  });
}

async function createFile(file: string, raw: Buffer, durable: boolean): Promise<void> {
  const handle = await fs.promises.open(file, 'wx', 0o600);
  await handle.write(raw);
  if (durable) {
    await handle.sync();
  }
  await handle.close();
}

/**
 * The Maildir limits: single file-system operations, and the whole life of a batch of
 * messages as mailbus lives it (create and write in tmp/, fsync, link into the group, rename
 * into the topic, fsync both; claim by rename, read; ack by rename, fsync both), nothing else.
 */
async function maildirLimits(root: string, raw: Buffer, durable: boolean): Promise<LimitRow[]> {
  const mode = durable ? 'maildir-fsync' : 'maildir-nofsync';
  const dirs = ['tmp', 'topic', 'group', 'claimed', 'archive'].map((name) => path.join(root, name));
  for (const dir of dirs) {
    fs.mkdirSync(dir, { recursive: true });
  }
  const [tmp, topic, group, claimed, archive] = dirs as [string, string, string, string, string];
  let serial = 0;
  const name = (): string =>
    `${Date.now()}.${process.pid}.${(serial += 1)}.${randomBytes(3).toString('hex')}`;

  const creates = await rate(MAILDIR_MS, async () => {
    await createFile(path.join(tmp, name()), raw, durable);
    return 1;
  });
  // Rename alone: time only the renames of files made beforehand.
  const staged = Array.from({ length: 2000 }, () => {
    const file = path.join(tmp, name());
    fs.writeFileSync(file, raw);
    return file;
  });
  const renameStarted = now();
  for (const file of staged) {
    fs.renameSync(file, path.join(claimed, path.basename(file)));
  }
  const renameRate = staged.length / ((now() - renameStarted) / 1000);

  const cycle = await rate(MAILDIR_MS, async () => {
    const names = Array.from({ length: BATCH }, name);
    await Promise.all(names.map((base) => createFile(path.join(tmp, base), raw, durable)));
    for (const base of names) {
      fs.linkSync(path.join(tmp, base), path.join(group, base));
      fs.renameSync(path.join(tmp, base), path.join(topic, base));
    }
    if (durable) {
      await Promise.all([fsyncDir(topic), fsyncDir(group)]);
    }
    for (const base of names) {
      fs.renameSync(path.join(group, base), path.join(claimed, base));
      fs.readFileSync(path.join(claimed, base));
    }
    for (const base of names) {
      fs.renameSync(path.join(claimed, base), path.join(archive, base));
    }
    if (durable) {
      await Promise.all([fsyncDir(claimed), fsyncDir(archive)]);
    }
    return BATCH;
  });
  fs.rmSync(root, { recursive: true, force: true });

  const sync = durable ? ', fsynced' : '';
  return [
    row(
      mode,
      'file-create',
      creates,
      'op/s',
      `one message file created and written${sync}, one at a time`,
    ),
    row(mode, 'rename', renameRate, 'op/s', 'rename(2) of a message file between folders'),
    row(
      mode,
      'message-cycle',
      cycle,
      'msg/s',
      `deliver (create${sync}, link, rename), claim (rename, read), ack (rename) of batches ` +
        `of ${BATCH}${durable ? ', each step fsyncing its folders once per batch' : ''}`,
    ),
  ];
}

function imapClient(endpoints: Endpoints): ImapFlow {
  const mail = endpoints.mail;
  if (!mail) {
    throw new Error('no mail servers');
  }
  return new ImapFlow({
    host: mail.host,
    port: mail.imapPort,
    secure: false,
    auth: { user: mail.user, pass: mail.password },
    tls: { ca: fs.readFileSync(mail.caFile, 'utf8') },
    logger: false,
  });
}

/**
 * How long after `send` (an APPEND on another session, or mail through Postfix) a session that
 * has the mailbox selected hears of it (IDLE, or NOOP polls).
 */
async function noticeDelays(
  watcher: ImapFlow,
  send: () => Promise<unknown>,
  byNoop: boolean,
): Promise<number[]> {
  const delays: number[] = [];
  for (let i = 0; i < NOTICE_SAMPLES; i += 1) {
    let appendedAt = 0;
    const heard = new Promise<number>((resolve) => {
      const onExists = (): void => {
        watcher.off('exists', onExists);
        resolve(now());
      };
      watcher.on('exists', onExists);
    });
    let polling = byNoop;
    const poller = (async () => {
      while (polling) {
        await watcher.noop();
        await sleep(10);
      }
    })();
    if (!byNoop) {
      await sleep(300); // imapflow starts IDLE after it has been unused for a moment
    }
    appendedAt = now();
    await send();
    const at = await Promise.race([heard, sleep(3000).then(() => now())]);
    polling = false;
    await poller;
    delays.push(at - appendedAt);
  }
  return delays;
}

/**
 * The least time one message takes through Dovecot as mailbus moves it, each command sent
 * once and nothing else running on these sessions: the floor under the IMAP latency.
 */
async function messagePath(
  claimer: ImapFlow,
  publisher: ImapFlow,
  topic: string,
  group: string,
  claimed: string,
  raw: Buffer,
): Promise<number[]> {
  const times: number[] = [];
  await publisher.mailboxOpen(topic);
  await claimer.mailboxOpen(group);
  for (let i = 0; i < NOTICE_SAMPLES; i += 1) {
    let seen = false;
    const onExists = (): void => {
      seen = true;
    };
    claimer.on('exists', onExists);
    const started = now();
    const uids = (await appendMessages(publisher, topic, [{ raw, flags: [] }])) ?? [];
    await copyMessages(publisher, uids, group);
    while (!seen && now() - started < 3000) {
      await claimer.noop();
    }
    claimer.off('exists', onExists);
    const waiting = (await claimer.search({ unKeyword: '$Claimed' }, { uid: true })) || [];
    await claimer.fetchAll(waiting, { uid: true, headers: ['x-mailbus-key'] }, { uid: true });
    await storeFlags(claimer, waiting, 'add', ['$Claimed']);
    await moveMessages(claimer, waiting, claimed);
    const lock = await claimer.getMailboxLock(claimed);
    try {
      const inClaimed = (await claimer.search({ all: true }, { uid: true })) || [];
      await fetchSources(claimer, inClaimed.slice(-1));
    } finally {
      lock.release();
    }
    times.push(now() - started);
    await claimer.mailboxOpen(group);
  }
  return times;
}

/** The Dovecot limits: round trips and rates of the commands mailbus sends, on the bench account. */
async function dovecotLimits(endpoints: Endpoints, raw: Buffer): Promise<LimitRow[]> {
  const tag = randomBytes(3).toString('hex');
  const topic = `limits-${tag}`;
  const group = `${topic}.group`;
  const claimed = `${topic}.claimed`;
  const archive = `${topic}.archive`;
  const client = imapClient(endpoints);
  const other = imapClient(endpoints);
  await client.connect();
  await other.connect();
  const rows: LimitRow[] = [];
  try {
    for (const mailbox of [topic, group, claimed, archive]) {
      await client.mailboxCreate(mailbox);
    }

    let appendMs: number[] = [];
    const appends = await rate(DOVECOT_MS, async () => {
      const started = now();
      await client.append(topic, raw);
      appendMs.push(now() - started);
      return 1;
    });
    rows.push(row('dovecot', 'append', appends, 'msg/s', 'one APPEND at a time'));
    rows.push(
      row('dovecot', 'append-ms', percentile(appendMs, 50), 'ms', 'APPEND round trip, p50'),
    );
    appendMs = [];

    const multi = await rate(DOVECOT_MS, async () => {
      await appendMessages(
        client,
        topic,
        Array.from({ length: 100 }, () => ({ raw, flags: [] })),
      );
      return 100;
    });
    rows.push(row('dovecot', 'multiappend-100', multi, 'msg/s', 'MULTIAPPEND of 100 messages'));

    const lock = await client.getMailboxLock(topic);
    try {
      const uids = (await client.search({ all: true }, { uid: true })) || [];
      const fetchMs: number[] = [];
      const noopMs: number[] = [];
      const started = now();
      for (let i = 0; now() - started < DOVECOT_MS && i < uids.length; i += 1) {
        const fetchStarted = now();
        await fetchSources(client, [uids[i] as number]);
        fetchMs.push(now() - fetchStarted);
        const noopStarted = now();
        await client.noop();
        noopMs.push(now() - noopStarted);
      }
      rows.push(
        row(
          'dovecot',
          'fetch-ms',
          percentile(fetchMs, 50),
          'ms',
          'UID FETCH of one message body, p50',
        ),
      );
      rows.push(row('dovecot', 'noop-ms', percentile(noopMs, 50), 'ms', 'NOOP round trip, p50'));
    } finally {
      lock.release();
    }

    // One message's life in batches of 100, the commands mailbus sends for it (flag stores
    // and moves by UID set), without the searches that find the UIDs.
    const cycle = await rate(DOVECOT_MS, async () => {
      await client.mailboxOpen(topic);
      const uids = await appendMessages(
        client,
        topic,
        Array.from({ length: 100 }, () => ({ raw, flags: [] })),
      );
      const appended = uids ?? [];
      await copyMessages(client, appended, group);
      await client.mailboxOpen(group);
      const inGroup = (await client.search({ all: true }, { uid: true })) || [];
      await storeFlags(client, inGroup, 'add', ['$Claimed']);
      const moved = await moveMessages(client, inGroup, claimed);
      await client.mailboxOpen(claimed);
      const inClaimed = (await client.search({ all: true }, { uid: true })) || [];
      await fetchSources(client, inClaimed);
      await storeFlags(client, inClaimed, 'add', ['\\Seen']);
      await moveMessages(client, inClaimed, archive);
      void moved;
      return appended.length;
    });
    rows.push(
      row(
        'dovecot',
        'message-cycle',
        cycle,
        'msg/s',
        'MULTIAPPEND, COPY, SEARCH, STORE, MOVE, FETCH, STORE, MOVE of batches of 100',
      ),
    );

    const path_ = await messagePath(client, other, topic, group, claimed, raw);
    rows.push(
      row(
        'dovecot',
        'message-path-ms',
        percentile(path_, 50),
        'ms',
        'one message from APPEND to its text in hand: APPEND, COPY, NOOP polls until seen, ' +
          'SEARCH, FETCH of its header, STORE, MOVE, FETCH of its text; p50',
      ),
    );

    await client.mailboxOpen(topic);
    const appendOther = () => other.append(topic, raw);
    const idle = await noticeDelays(client, appendOther, false);
    rows.push(
      row(
        'dovecot',
        'idle-notice-ms',
        percentile(idle, 50),
        'ms',
        'APPEND on one session to EXISTS on an IDLE one, p50',
      ),
    );
    const polled = await noticeDelays(client, appendOther, true);
    rows.push(
      row(
        'dovecot',
        'noop-notice-ms',
        percentile(polled, 50),
        'ms',
        'the same for a session sending NOOP every 10 ms, p50',
      ),
    );
    const mailed = await smtpNoticeDelays(client, endpoints, topic, raw);
    rows.push(
      row(
        'dovecot',
        'smtp-notice-ms',
        percentile(mailed, 50),
        'ms',
        'SMTP send through Postfix (LMTP into Dovecot) to EXISTS on a session sending NOOP ' +
          'every 10 ms, p50',
      ),
    );
  } finally {
    try {
      for (const mailbox of [archive, claimed, group, topic]) {
        await client.mailboxDelete(mailbox).catch(() => undefined);
      }
    } finally {
      await client.logout().catch(() => undefined);
      await other.logout().catch(() => undefined);
    }
  }
  return rows;
}

/** The NOOP-polled notice delays of mail sent through Postfix to `mailbox` of the account. */
async function smtpNoticeDelays(
  watcher: ImapFlow,
  endpoints: Endpoints,
  mailbox: string,
  raw: Buffer,
): Promise<number[]> {
  const mail = endpoints.mail!;
  const [local, domain] = [mail.user, mail.domain];
  const transport = nodemailer.createTransport({
    host: mail.host,
    port: mail.smtpPort,
    secure: false,
    ignoreTLS: true,
    pool: true,
    maxConnections: 1,
  });
  try {
    const envelope = { from: `${local}@${domain}`, to: `${local}+${mailbox}@${domain}` };
    // A warm connection for the samples; its message must have arrived before they start.
    await transport.sendMail({ envelope, raw });
    await sleep(1_000);
    await watcher.noop();
    return await noticeDelays(watcher, () => transport.sendMail({ envelope, raw }), true);
  } finally {
    transport.close();
  }
}

export async function measureLimits(
  endpoints: Endpoints,
  workDir: string,
  payloadBytes: number,
  log: (text: string) => void,
): Promise<LimitRow[]> {
  const raw = await sampleMessage(payloadBytes);
  const rows: LimitRow[] = [];
  for (const durable of [true, false]) {
    log(`limits: Maildir operations${durable ? ' with fsync' : ' without fsync'}`);
    rows.push(...(await maildirLimits(path.join(workDir, `limits-${durable}`), raw, durable)));
  }
  if (endpoints.mail) {
    log('limits: Dovecot round trips');
    try {
      rows.push(...(await dovecotLimits(endpoints, raw)));
    } catch (err) {
      log(`limits: Dovecot: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return rows;
}

export interface LimitRatios {
  type: 'limit-ratios';
  basis: string;
  /** mailbus system -> metric -> { value, limit, limitMetric, ratio }. */
  ratios: Record<
    string,
    Record<string, { value: number; limit: number; of: string; ratio: number }>
  >;
}

/** Which limit each mailbus figure is held against. */
const LIMIT_OF: Array<{ system: string; metric: string; limitMode: string; limitMetric: string }> =
  [
    {
      system: 'mailbus/maildir-durable',
      metric: 'end-to-end',
      limitMode: 'maildir-fsync',
      limitMetric: 'message-cycle',
    },
    {
      system: 'mailbus/maildir-relaxed',
      metric: 'end-to-end',
      limitMode: 'maildir-nofsync',
      limitMetric: 'message-cycle',
    },
    {
      system: 'mailbus/imap',
      metric: 'end-to-end',
      limitMode: 'dovecot',
      limitMetric: 'message-cycle',
    },
    {
      system: 'mailbus/imap',
      metric: 'publish-batch',
      limitMode: 'dovecot',
      limitMetric: 'multiappend-100',
    },
    { system: 'mailbus/imap', metric: 'publish', limitMode: 'dovecot', limitMetric: 'append' },
    {
      system: 'mailbus/imap',
      metric: 'latency-p50',
      limitMode: 'dovecot',
      limitMetric: 'message-path-ms',
    },
    {
      system: 'mailbus/smtp',
      metric: 'latency-p50',
      limitMode: 'dovecot',
      limitMetric: 'smtp-notice-ms',
    },
  ];

/** Each mailbus figure against the limit it is bound by, both from this run. */
export function limitRatios(
  rows: Array<{ system: string; mode: string; metric: string; value: number; scenario: string }>,
  limits: LimitRow[],
): LimitRatios {
  const ratios: LimitRatios['ratios'] = {};
  for (const { system, metric, limitMode, limitMetric } of LIMIT_OF) {
    const own = rows.find(
      (candidate) =>
        `${candidate.system}/${candidate.mode}` === system &&
        candidate.metric === metric &&
        candidate.scenario === '',
    );
    const limit = limits.find((entry) => entry.mode === limitMode && entry.metric === limitMetric);
    if (!own || !limit || !Number.isFinite(own.value) || limit.value === 0) {
      continue;
    }
    ratios[system] ??= {};
    (ratios[system] as LimitRatios['ratios'][string])[metric] = {
      value: Number(own.value.toPrecision(4)),
      limit: Number(limit.value.toPrecision(4)),
      of: `${limitMode} ${limitMetric}`,
      ratio: Number((own.value / limit.value).toPrecision(3)),
    };
  }
  return {
    type: 'limit-ratios',
    basis:
      'mailbus value / the raw rate (or delay) of the operations under it, both measured in ' +
      'this run: a throughput ratio of 1 would be everything the machine allows.',
    ratios,
  };
}

export function limitTables(limits: LimitRow[], line: LimitRatios): string {
  const format = (value: number): string =>
    value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toPrecision(3);
  const out = [
    'Limits: the raw operations under mailbus, measured in this run',
    '',
    table(
      ['limit', 'metric', 'value', 'unit', 'what'],
      limits.map((entry) => [
        entry.mode,
        entry.metric,
        format(entry.value),
        entry.unit,
        entry.what,
      ]),
    ),
    '',
    `mailbus against its limits (${line.basis})`,
    '',
    table(
      ['system', 'metric', 'mailbus', 'limit', 'of', 'ratio'],
      Object.entries(line.ratios).flatMap(([system, metrics]) =>
        Object.entries(metrics).map(([metric, entry]) => [
          system,
          metric,
          format(entry.value),
          format(entry.limit),
          entry.of,
          entry.ratio.toPrecision(3),
        ]),
      ),
    ),
  ];
  return out.join('\n');
}
