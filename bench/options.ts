// The benchmark's command line: flags, their defaults in full and quick mode, and the one
// function that resolves them into BenchOptions.

import { parseArgs } from 'node:util';

/** The systems the runner knows, as `system/mode`. */
export const SYSTEM_IDS = [
  'mailbus/maildir-durable',
  'mailbus/maildir-relaxed',
  'mailbus/imap',
  'mailbus/smtp',
  'bullmq/redis',
  'rabbitmq/classic',
  'rabbitmq/quorum',
  'pg-boss/work',
  'pg-boss/fetch-100',
  'nats/jetstream-file',
] as const;

export type SystemId = (typeof SYSTEM_IDS)[number];

/** The scaling runs of a full benchmark, in order. */
export const SCALING_RUNS = ['backlog', 'payload', 'consumers'] as const;
export type ScalingRun = (typeof SCALING_RUNS)[number];

function selectScalingRuns(list: string | undefined): ScalingRun[] {
  return selectNames('--scaling-runs', list, SCALING_RUNS);
}

/** The measured phases of each run, in order. */
export const PHASES = ['publish', 'backlog', 'end-to-end', 'latency'] as const;

export type Phase = (typeof PHASES)[number];

/**
 * The scaling runs cover mailbus's three stores, BullMQ and RabbitMQ's classic queue (the peer
 * whose confirms wait for fsync, like mailbus's); they leave out SMTP (its consumers are the
 * IMAP ones), quorum queues, pg-boss and NATS, to keep a full run near half an hour here.
 */
export const DEFAULT_SCALING_SYSTEMS: SystemId[] = [
  'mailbus/maildir-durable',
  'mailbus/maildir-relaxed',
  'mailbus/imap',
  'bullmq/redis',
  'rabbitmq/classic',
];

export interface BenchOptions {
  quick: boolean;
  json: boolean;
  writeDocs: boolean;
  /** Re-run each mailbus system under `node --cpu-prof` and summarise the profiles. */
  profile: boolean;
  systems: SystemId[];
  /** The phases to run (all by default; fewer to profile one). */
  phases: Phase[];
  /** Messages per throughput phase. */
  messages: number;
  payloadBytes: number;
  /** Handlers running at once in each consumer. */
  concurrency: number;
  /** Publish calls the one producer keeps outstanding at once. */
  inflight: number;
  /** Messages per publishBatch call (and per batched fetch where a system has one). */
  batchSize: number;
  latencySamples: number;
  latencyIntervalMs: number;
  /** Repetitions of every phase; each figure is the median. */
  runs: number;
  /** Messages published and consumed before each run, not measured. */
  warmupMessages: number;
  /** Longest any one measured phase may take; a phase cut short reports what it did. */
  phaseTimeoutMs: number;
  scaling: boolean;
  /** Measure the raw Maildir and Dovecot operations mailbus is built on (limits.ts). */
  limits: boolean;
  /** The systems the scaling runs cover (a subset: they are long). */
  scalingSystems: SystemId[];
  /** Which scaling runs (all by default). */
  scalingRuns: ScalingRun[];
  scalingBacklog: number;
  /** Longest the filling of the large backlog may take, and its consuming. */
  scalingFillTimeoutMs: number;
  scalingConsumeTimeoutMs: number;
  scalingPayloadBytes: number[];
  scalingConsumers: number[];
  scalingProcesses: number[];
  /** Where the benchmark's own Maildirs go (a temporary directory is made inside). */
  dataDir: string;
  /** Where Dovecot keeps the benchmark account's mail: on the data disk or on tmpfs. */
  imapStorage: 'disk' | 'tmpfs';
  /** How Dovecot stores the benchmark account's mail. */
  imapFormat: 'maildir' | 'sdbox';
  /** Where results, the chart and profiles are written. */
  outDir: string;
  redisUrl: string;
  amqpUrl: string;
  postgresUrl: string;
  natsUrl: string;
}

export const USAGE = `npm run bench -- [options]

  --quick                 a subset in about 3 minutes: 5,000 messages, 1 run, phases limited to
                          5 s, no scaling runs, no mailbus/smtp (unless --systems names it)
  --json                  JSON lines on stdout (the table goes to stderr)
  --write-docs            also write the chart to docs/benchmark.svg
  --profile               re-run the mailbus systems under node --cpu-prof and summarise them
  --systems A,B           only these (${SYSTEM_IDS.join(', ')});
                          a prefix such as "mailbus" or "rabbitmq" selects all its modes
  --phases A,B            only these phases (${PHASES.join(', ')})
  --messages N            messages per throughput phase (20000; quick 5000)
  --payload BYTES         JSON payload size (256)
  --concurrency N         handlers per consumer (8)
  --inflight N            publish calls outstanding from the one producer (64)
  --batch N               messages per batch publish (100)
  --latency-samples N     messages of the latency run (300; quick 100), --latency-interval-ms (20)
  --runs N                repetitions, the median is reported (3; quick 1)
  --phase-timeout-s S     longest one measured phase may take (8; quick 5; end-to-end 1.5 times that)
  --no-scaling            skip the scaling runs in full mode
  --no-limits             skip measuring the raw Maildir and Dovecot operations under mailbus
  --backlog N             the large backlog of the scaling runs (200000)
  --scaling-systems A,B   systems of the scaling runs (${DEFAULT_SCALING_SYSTEMS.join(', ')})
  --scaling-runs A,B      only these scaling runs (${SCALING_RUNS.join(', ')})
  --data-dir DIR          where the Maildirs go (default /tmp, which is on the disk here)
  --imap-storage disk|tmpfs  Dovecot's mail for the benchmark account (disk)
  --imap-format sdbox|maildir  how Dovecot stores it (sdbox, as docs/servers.md advises)
  --out DIR               results, chart and profiles (bench-results)
  --redis URL --amqp URL --postgres URL --nats HOST:PORT   the peers (loopback defaults)
`;

function count(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) {
    return fallback;
  }
  const number = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(number) || number < min) {
    throw new Error(`--${name} must be a whole number of at least ${min}, not "${value}"`);
  }
  return number;
}

/** Left out of a quick run unless named: its consumers are the IMAP ones, and it is slow. */
const NOT_IN_QUICK: SystemId[] = ['mailbus/smtp'];

function selectSystems(list: string | undefined, quick = false): SystemId[] {
  if (list === undefined) {
    return SYSTEM_IDS.filter((id) => !quick || !NOT_IN_QUICK.includes(id));
  }
  const wanted = list
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean);
  const chosen = SYSTEM_IDS.filter((id) =>
    wanted.some((entry) => id === entry || id.startsWith(`${entry}/`)),
  );
  const unknown = wanted.filter(
    (entry) => !SYSTEM_IDS.some((id) => id === entry || id.startsWith(`${entry}/`)),
  );
  if (unknown.length > 0 || chosen.length === 0) {
    throw new Error(
      `--systems: unknown ${unknown.join(', ')}; choose from ${SYSTEM_IDS.join(', ')}`,
    );
  }
  return chosen;
}

function selectPhases(list: string | undefined): Phase[] {
  return selectNames('--phases', list, PHASES);
}

/** The names of `all` that a comma-separated flag lists (all of them without the flag). */
function selectNames<T extends string>(flag: string, list: string | undefined, all: readonly T[]) {
  if (list === undefined) {
    return [...all];
  }
  const wanted = list.split(',').map((entry) => entry.trim());
  const unknown = wanted.filter((entry) => !(all as readonly string[]).includes(entry));
  if (unknown.length > 0) {
    throw new Error(`${flag}: unknown ${unknown.join(', ')}; choose from ${all.join(', ')}`);
  }
  return all.filter((name) => wanted.includes(name));
}

/** Reads the flags; returns undefined when --help was asked for. */
export function resolveOptions(argv: string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      quick: { type: 'boolean' },
      json: { type: 'boolean' },
      'write-docs': { type: 'boolean' },
      profile: { type: 'boolean' },
      systems: { type: 'string' },
      phases: { type: 'string' },
      messages: { type: 'string' },
      payload: { type: 'string' },
      concurrency: { type: 'string' },
      inflight: { type: 'string' },
      batch: { type: 'string' },
      'latency-samples': { type: 'string' },
      'latency-interval-ms': { type: 'string' },
      runs: { type: 'string' },
      'phase-timeout-s': { type: 'string' },
      'no-scaling': { type: 'boolean' },
      'no-limits': { type: 'boolean' },
      backlog: { type: 'string' },
      'scaling-systems': { type: 'string' },
      'scaling-runs': { type: 'string' },
      'data-dir': { type: 'string' },
      'imap-storage': { type: 'string' },
      'imap-format': { type: 'string' },
      out: { type: 'string' },
      redis: { type: 'string' },
      amqp: { type: 'string' },
      postgres: { type: 'string' },
      nats: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    return undefined;
  }

  const quick = values.quick ?? false;
  const imapStorage = values['imap-storage'] ?? 'disk';
  if (imapStorage !== 'disk' && imapStorage !== 'tmpfs') {
    throw new Error(`--imap-storage must be disk or tmpfs, not "${imapStorage}"`);
  }
  const imapFormat = values['imap-format'] ?? 'sdbox';
  if (imapFormat !== 'sdbox' && imapFormat !== 'maildir') {
    throw new Error(`--imap-format must be sdbox or maildir, not "${imapFormat}"`);
  }
  const env = process.env;
  return {
    quick,
    json: values.json ?? false,
    writeDocs: values['write-docs'] ?? false,
    profile: values.profile ?? false,
    systems: selectSystems(values.systems, quick),
    phases: selectPhases(values.phases),
    messages: count('messages', values.messages, quick ? 5_000 : 20_000),
    payloadBytes: count('payload', values.payload, 256, 32),
    concurrency: count('concurrency', values.concurrency, 8),
    inflight: count('inflight', values.inflight, 64),
    batchSize: count('batch', values.batch, 100),
    latencySamples: count('latency-samples', values['latency-samples'], quick ? 100 : 300),
    latencyIntervalMs: count('latency-interval-ms', values['latency-interval-ms'], 20),
    runs: count('runs', values.runs, quick ? 1 : 3),
    warmupMessages: quick ? 50 : 200,
    phaseTimeoutMs: count('phase-timeout-s', values['phase-timeout-s'], quick ? 5 : 8) * 1000,
    scaling: !quick && !(values['no-scaling'] ?? false),
    limits: !(values['no-limits'] ?? false),
    scalingSystems:
      values['scaling-systems'] === undefined
        ? DEFAULT_SCALING_SYSTEMS
        : selectSystems(values['scaling-systems']),
    scalingRuns: selectScalingRuns(values['scaling-runs']),
    scalingBacklog: count('backlog', values.backlog, 200_000),
    scalingFillTimeoutMs: 180_000,
    scalingConsumeTimeoutMs: 30_000,
    scalingPayloadBytes: [1024, 64 * 1024, 1_000_000],
    scalingConsumers: [1, 4, 16],
    scalingProcesses: [1, 4],
    dataDir: values['data-dir'] ?? '/tmp',
    imapStorage,
    imapFormat,
    outDir: values.out ?? 'bench-results',
    redisUrl: values.redis ?? env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379',
    amqpUrl: values.amqp ?? env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
    postgresUrl:
      values.postgres ?? env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    natsUrl: values.nats ?? env.BENCH_NATS_URL ?? '127.0.0.1:4222',
  };
}
