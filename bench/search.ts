// The search bar's benchmark: one group of 100,000 messages on a Maildir and in a private
// Dovecot, and the searches an operator types, each timed through the store's search() as the
// dashboard calls it. Prints a table (and JSON lines with --json); removes what it created.
//
//   npm run bench:search                       # 100,000 messages, both stores, a few minutes
//   npm run bench:search -- --messages 20000 --stores maildir

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from '../src/index.js';
import type { ConnectOptions, Mailbus } from '../src/index.js';
import { DeadLetterError } from '../src/consumer/errors.js';
import type { SearchQuery } from '../src/store/store.js';
import type { MailServers } from '../test/servers/mail-servers.js';
import { machine, storageOf } from './environment.js';
import { rawLimits } from './imap-limits.js';
import type { RawLimit } from './imap-limits.js';
import { now } from './timing.js';

const GROUP = 'default';

/** Messages per publishBatch call while filling. */
const FILL_BATCH = 1_000;

/** Distinct ordering keys: a key search finds messages / KEYS of them. */
const KEYS = 1_000;

/** One message in this many mentions a word of its own, for the free-text search. */
const NEEDLE_EVERY = 10_000;

/** How many of the messages a worker handles (1 in 100 of them dies), for the states. */
const HANDLED_FRACTION = 0.01;

/** Each search runs twice: the first (cold caches, no index yet) and again. */
const REPEATS = 2;

const REGIONS = ['north', 'south', 'east', 'west'];

interface Figures {
  store: string;
  search: string;
  total: number;
  hits: number;
  firstMs: number;
  /** The second run: what an operator sees when refining a search. */
  againMs: number;
}

function log(text: string): void {
  process.stderr.write(`[search ${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

function payloadOf(n: number) {
  const note = n % NEEDLE_EVERY === 0 ? `needle-${n} for the search` : 'an ordinary order';
  return { orderId: n, sku: `sku-${n % 5_000}`, quantity: 1 + (n % 7), note };
}

/** Publishes `count` messages to a new topic, then handles a few, killing 1 in 100 of those. */
async function fill(bus: Mailbus, topic: string, count: number) {
  await bus.subscribe(topic, GROUP);
  const ids: string[] = [];
  const started = now();
  // The time range search asks for the 5% of messages published from the middle on.
  const half = Math.floor(count / 2 / FILL_BATCH) * FILL_BATCH;
  const windowEndsAt = half + Math.max(FILL_BATCH, Math.round(count / 20));
  let windowStart = new Date();
  let windowEnd = new Date();
  for (let first = 0; first < count; first += FILL_BATCH) {
    if (first === half) {
      windowStart = new Date();
    }
    const batch = Array.from({ length: Math.min(FILL_BATCH, count - first) }, (_, i) => {
      const n = first + i;
      return {
        key: `customer-${n % KEYS}`,
        headers: { 'X-Region': REGIONS[n % REGIONS.length] as string },
        payload: payloadOf(n),
      };
    });
    ids.push(...(await bus.publishBatch(topic, batch)));
    if (first + FILL_BATCH === windowEndsAt) {
      windowEnd = new Date();
    }
    if ((first / FILL_BATCH) % 20 === 19) {
      log(`  published ${first + FILL_BATCH}`);
    }
  }
  const publishSeconds = (now() - started) / 1000;

  const handle = Math.floor(count * HANDLED_FRACTION);
  const handledAt = now();
  const worker = bus.consume(
    topic,
    (message) => {
      if ((message.payload as { orderId: number }).orderId % 100 === 7) {
        throw new DeadLetterError('rejected by the benchmark');
      }
    },
    { group: GROUP, concurrency: 16, prefetch: 64, maxMessages: handle },
  );
  const summary = await worker.done;
  const consumeSeconds = (now() - handledAt) / 1000;
  return { ids, windowStart, windowEnd, publishSeconds, consumeSeconds, summary };
}

async function timeSearches(
  store: string,
  bus: Mailbus,
  topic: string,
  filled: Awaited<ReturnType<typeof fill>>,
  count: number,
): Promise<Figures[]> {
  const middle = filled.ids[Math.floor(count / 2) + 1] as string;
  const needle = Math.floor(count / 2 / NEEDLE_EVERY) * NEEDLE_EVERY;
  const half = Math.floor(count / 2);
  const searches: Array<[string, SearchQuery, { offset?: number; limit: number }]> = [
    ['id, every state', { topic, id: middle }, { limit: 25 }],
    ['key, every state', { topic, group: GROUP, key: 'customer-42' }, { limit: 25 }],
    [
      'header X-Region:north',
      { topic, group: GROUP, header: { name: 'X-Region', value: 'north' } },
      { limit: 25 },
    ],
    ['free text, every state', { topic, text: `needle-${needle}` }, { limit: 25 }],
    ['state:dead', { topic, group: GROUP, states: ['dead'] }, { limit: 25 }],
    ['state:handled', { topic, group: GROUP, states: ['handled'] }, { limit: 25 }],
    [
      'time range (5% of them)',
      { topic, group: GROUP, since: filled.windowStart, before: filled.windowEnd },
      { limit: 25 },
    ],
    ['first page, every state', { topic, group: GROUP }, { limit: 25 }],
    [`a later page (offset ${half})`, { topic, group: GROUP }, { offset: half, limit: 25 }],
    ['key and text', { topic, group: GROUP, key: 'customer-0', text: 'needle' }, { limit: 25 }],
  ];

  const figures: Figures[] = [];
  for (const [name, query, page] of searches) {
    const times: number[] = [];
    let total = 0;
    let hits = 0;
    for (let run = 0; run < REPEATS; run += 1) {
      const started = now();
      const result = await bus.store.search(query, page);
      times.push(now() - started);
      total = result.total;
      hits = result.hits.length;
    }
    const row = {
      store,
      search: name,
      total,
      hits,
      firstMs: Math.round(times[0] as number),
      againMs: Math.round(times.at(-1) as number),
    };
    log(`  ${name}: ${total} match, ${row.firstMs} ms first, ${row.againMs} ms again`);
    figures.push(row);
  }
  return figures;
}

async function benchStore(
  store: string,
  options: ConnectOptions,
  count: number,
  limitsOf?: (waitingMailbox: string) => Promise<RawLimit[]>,
): Promise<{ figures: Figures[]; fill: string; limits: RawLimit[] }> {
  const bus = await connect(options);
  try {
    const topic = `search-${Date.now().toString(36)}`;
    log(`${store}: publishing ${count} messages to ${topic}/${GROUP}`);
    const filled = await fill(bus, topic, count);
    const { handled, deadLettered } = filled.summary;
    const fillText =
      `${count} published in ${filled.publishSeconds.toFixed(1)} s, ` +
      `${handled} handled and ${deadLettered} dead in ${filled.consumeSeconds.toFixed(1)} s`;
    log(`${store}: ${fillText}`);
    const figures = await timeSearches(store, bus, topic, filled, count);
    // After the searches, so the server's caches are as warm as for their second runs.
    const limits = limitsOf ? await limitsOf(`${topic}.${GROUP}`) : [];
    for (const limit of limits) {
      log(`  raw: ${limit.what}: ${limit.ms} ms, ${limit.bytes} bytes`);
    }
    return { figures, fill: fillText, limits };
  } finally {
    await bus.close();
  }
}

function table(figures: Figures[], stores: string[]): string {
  const searches = [...new Set(figures.map((row) => row.search))];
  const header = ['search', ...stores.flatMap((s) => [`${s} matches`, `${s} ms (first / again)`])];
  const rows = searches.map((search) => [
    search,
    ...stores.flatMap((store) => {
      const row = figures.find((f) => f.store === store && f.search === search);
      return row ? [String(row.total), `${row.firstMs} / ${row.againMs}`] : ['-', '-'];
    }),
  ]);
  const lines = [header, ...rows].map((cells) => `| ${cells.join(' | ')} |`);
  lines.splice(1, 0, `|${header.map(() => ' --- ').join('|')}|`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string', default: '100000' },
      stores: { type: 'string', default: 'maildir,imap' },
      'data-dir': { type: 'string', default: os.tmpdir() },
      json: { type: 'boolean', default: false },
    },
  });
  const count = Number(values.messages);
  const stores = String(values.stores).split(',');
  const workDir = fs.mkdtempSync(path.join(String(values['data-dir']), 'mailbus-search-'));
  let servers: MailServers | undefined;
  const figures: Figures[] = [];
  const fills: string[] = [];
  const limits: RawLimit[] = [];
  try {
    if (stores.includes('maildir')) {
      const root = path.join(workDir, 'maildir');
      const result = await benchStore('maildir', { url: `maildir:${root}`, noFsync: true }, count);
      figures.push(...result.figures);
      fills.push(`maildir (${storageOf(root)}): ${result.fill}`);
    }
    if (stores.includes('imap')) {
      const { startMailServers } = await import('../test/servers/mail-servers.js');
      log('starting a private Dovecot');
      servers = await startMailServers();
      const info = servers.info;
      const options = {
        url: `imap://${info.user}@${info.host}:${info.imapPort}`,
        password: info.password,
        tlsCaFile: info.caFile,
      };
      const result = await benchStore('imap', options, count, (mailbox) =>
        rawLimits(info, mailbox),
      );
      figures.push(...result.figures);
      limits.push(...result.limits);
      fills.push(`imap (Dovecot, ${storageOf(info.maildir)}): ${result.fill}`);
    }
  } finally {
    await servers?.stop();
    fs.rmSync(workDir, { recursive: true, force: true });
  }

  const { cores, cpu, node, loadAverage } = machine();
  if (values.json) {
    for (const row of figures) {
      process.stdout.write(`${JSON.stringify({ type: 'search', messages: count, ...row })}\n`);
    }
    for (const limit of limits) {
      process.stdout.write(`${JSON.stringify({ type: 'raw-limit', messages: count, ...limit })}\n`);
    }
    return;
  }
  process.stdout.write(
    [
      `Search in one group of ${count} messages; ${cores} cores (${cpu}), Node ${node}, ` +
        `load ${loadAverage.join(' ')}`,
      ...fills,
      '',
      table(figures, stores),
      '',
      ...(limits.length === 0
        ? []
        : [
            'Raw limits: Dovecot alone, on the waiting mailbox, a plain socket counting bytes',
            '',
            '| work | ms | bytes |',
            '| --- | --- | --- |',
            ...limits.map((limit) => `| ${limit.what} | ${limit.ms} | ${limit.bytes} |`),
            '',
          ]),
    ].join('\n'),
  );
}

await main();
