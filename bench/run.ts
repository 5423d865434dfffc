// The benchmark runner: mailbus (Maildir with and without fsync, IMAP on Dovecot, SMTP through
// Postfix) against BullMQ, RabbitMQ, pg-boss and NATS JetStream on this machine, with the same
// workload and the same measuring code for all. `npm run bench -- --help` lists the options.
//
// It makes a temporary directory for the Maildirs (and Dovecot's mail), starts a private
// Dovecot and Postfix when the IMAP or SMTP setups are asked for, runs every system, prints
// the table (and JSON lines with --json), draws the chart, and removes what it created:
// queues, streams and the pg-boss schema on the peers, the mail servers, the directory.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MailServers } from '../test/servers/mail-servers.js';
import { chartSvg } from './chart.js';
import { commandOutput, machine, packageVersion, storageOf } from './environment.js';
import type { BenchOptions, Phase, SystemId } from './options.js';
import { USAGE, resolveOptions } from './options.js';
import type { LimitRow } from './limits.js';
import { limitRatios, limitTables, measureLimits } from './limits.js';
import { formatSummary, summariseProfile } from './profile.js';
import { mailbusFirst, mainTable, ratioTables, rowDetails, scalingTables } from './report.js';
import type { ResultRow, SkippedRow } from './results.js';
import { aggregate, ratios, splitId } from './results.js';
import { runScaling } from './scaling.js';
import type { Endpoints, QueueSystem } from './systems/system.js';
import { Unreachable, openSystem, reason } from './systems/system.js';
import { withTimeout } from './timing.js';
import type { Measurement, Metric, PhaseSettings } from './workload.js';
import {
  measureBacklog,
  measureEndToEnd,
  measureLatency,
  measurePublish,
  warmUp,
} from './workload.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RUN_SCRIPT = fileURLToPath(import.meta.url);

/** The peer client packages whose versions the report names. */
const PEER_PACKAGES = ['bullmq', 'ioredis', 'amqplib', 'pg-boss', 'nats', 'imapflow', 'nodemailer'];

/** Messages per batched fetch of pg-boss/fetch-100: the mode's name. */
const PG_BOSS_FETCH_BATCH = 100;

/** How long opening or closing one system may take. */
const OPEN_TIMEOUT_MS = 30_000;
const CLOSE_TIMEOUT_MS = 30_000;

/** A profiled run of one system may take this long before it is stopped. */
const PROFILE_RUN_TIMEOUT_MS = 10 * 60_000;

let jsonMode = false;

/** Progress lines: always on stderr, so that stdout is only the report (or the JSON). */
function log(text: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

/** The human report: on stdout, or on stderr when stdout carries JSON. */
function say(text: string): void {
  (jsonMode ? process.stderr : process.stdout).write(`${text}\n`);
}

function emitJson(record: object): void {
  if (jsonMode) {
    process.stdout.write(`${JSON.stringify(record)}\n`);
  }
}

interface MailSetup {
  servers?: MailServers;
  error?: string;
}

async function startMail(options: BenchOptions, workDir: string, endpoints: Endpoints) {
  const setup: MailSetup = {};
  if (!options.systems.some((id) => id === 'mailbus/imap' || id === 'mailbus/smtp')) {
    return setup;
  }
  try {
    const { startMailServers } = await import('../test/servers/mail-servers.js');
    log('starting a private Dovecot and Postfix');
    setup.servers = await startMailServers();
    const info = setup.servers.info;
    // An account of the benchmark's own, stored as --imap-format says: on the same disk as
    // mailbus's own Maildir, like the peers' data, or beside the harness's mail on /dev/shm.
    const user = 'bench';
    const password = `pw-${randomBytes(9).toString('base64url')}`;
    const maildir =
      options.imapStorage === 'disk'
        ? path.join(workDir, 'dovecot-mail')
        : path.join(path.dirname(info.maildir), 'bench');
    await setup.servers.addUser(user, password, maildir, options.imapFormat);
    endpoints.mail = {
      host: info.host,
      imapPort: info.imapPort,
      smtpPort: info.smtpPort,
      user,
      password,
      caFile: info.caFile,
      domain: info.domain,
      maildir,
      format: options.imapFormat,
      storage: storageOf(maildir),
      postfixStorage: storageOf(info.dir),
    };
  } catch (err) {
    setup.error = `the private Dovecot and Postfix did not start: ${reason(err)}`;
    log(setup.error);
  }
  return setup;
}

function settingsOf(options: BenchOptions): PhaseSettings {
  return {
    messages: options.messages,
    payloadBytes: options.payloadBytes,
    concurrency: options.concurrency,
    inflight: options.inflight,
    batchSize: options.batchSize,
    phaseTimeoutMs: options.phaseTimeoutMs,
  };
}

interface SystemOutcome {
  rows: ResultRow[];
  skipped: SkippedRow[];
  warnings: string[];
}

/** Opens one system, runs every phase `runs` times (and the scaling runs), closes it. */
async function benchSystem(
  id: SystemId,
  options: BenchOptions,
  endpoints: Endpoints,
  runTag: string,
): Promise<SystemOutcome> {
  const outcome: SystemOutcome = { rows: [], skipped: [], warnings: [] };
  const skip = (metric: string, why: string): void => {
    outcome.skipped.push({
      type: 'skipped',
      ...splitId(id),
      metric,
      value: null,
      unit: null,
      reason: why,
    });
  };

  log(`${id}: connecting`);
  let system: QueueSystem;
  try {
    system = await withTimeout(
      openSystem(id, endpoints, { owner: true }),
      OPEN_TIMEOUT_MS,
      'connecting',
    );
  } catch (err) {
    skip('*', err instanceof Unreachable ? err.message : `could not be opened: ${reason(err)}`);
    log(`${id}: skipped (${outcome.skipped[0]?.reason})`);
    return outcome;
  }

  const settings = settingsOf(options);
  const measured = new Map<Metric, Measurement[]>();
  const keep = (measurements: Measurement[]): void => {
    for (const m of measurements) {
      measured.set(m.metric, [...(measured.get(m.metric) ?? []), m]);
    }
  };
  const queueName = (phase: string): string =>
    `bench-${runTag}-${id.replace(/[^a-z0-9]+/g, '-')}-${phase}`.slice(0, 64);

  try {
    for (let run = 1; run <= options.runs; run += 1) {
      const phases: [Phase | 'warm-up', () => Promise<Measurement[]>][] = [
        [
          'warm-up',
          async () => {
            await warmUp(system, queueName(`warm${run}`), options.warmupMessages, settings);
            return [];
          },
        ],
        ['publish', async () => [await measurePublish(system, queueName(`pub${run}`), settings)]],
        ['backlog', () => measureBacklog(system, queueName(`backlog${run}`), settings)],
        [
          'end-to-end',
          async () => [await measureEndToEnd(system, queueName(`e2e${run}`), settings)],
        ],
        [
          'latency',
          () =>
            measureLatency(
              system,
              queueName(`lat${run}`),
              settings,
              options.latencySamples,
              options.latencyIntervalMs,
            ),
        ],
      ];
      for (const [name, phase] of phases) {
        if (name !== 'warm-up' && !options.phases.includes(name)) {
          continue;
        }
        log(`${id}: run ${run}/${options.runs}, ${name}`);
        try {
          const measurements = await phase();
          keep(measurements);
          for (const m of measurements) {
            log(
              `  ${m.metric}: ${m.value.toFixed(1)} ${m.unit}${m.capped ? ` (cut short: ${m.count} of ${m.target})` : ''}`,
            );
          }
        } catch (err) {
          log(`  ${name} failed: ${reason(err)}`);
          if (run === 1) {
            skip(name, `failed: ${reason(err)}`);
          }
        }
      }
    }
    for (const measurements of measured.values()) {
      outcome.rows.push(
        aggregate(id, measurements, {
          scenario: '',
          durability: system.durability,
          storage: system.storage,
          payloadBytes: settings.payloadBytes,
          concurrency: settings.concurrency,
          consumers: 1,
          processes: 1,
          inflight: settings.inflight,
          batchSize: settings.batchSize,
        }),
      );
    }

    if (options.scaling && options.scalingSystems.includes(id)) {
      log(`${id}: scaling runs`);
      outcome.rows.push(
        ...(await runScaling({ id, system, endpoints, options, settings, queueName, log })),
      );
    }
  } finally {
    try {
      await withTimeout(system.close(), CLOSE_TIMEOUT_MS, 'closing');
    } catch (err) {
      system.warnings.push(`close: ${reason(err)}`);
    }
    outcome.warnings.push(...system.warnings);
  }
  return outcome;
}

function versions(): Record<string, string> {
  const found: Record<string, string> = {};
  for (const name of PEER_PACKAGES) {
    found[name] = packageVersion(REPO_ROOT, name);
  }
  found.dovecot = commandOutput('dovecot', ['--version']) ?? 'not installed';
  found.postfix = commandOutput('postconf', ['-dh', 'mail_version']) ?? 'not installed';
  return found;
}

/** --profile: each mailbus system again, alone, under node --cpu-prof; then the summaries. */
function profileMailbus(options: BenchOptions, argv: string[]): void {
  const passThrough: string[] = [];
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i] as string;
    if (arg === '--systems' || arg === '--out') {
      i += 1;
    } else if (
      !['--profile', '--json', '--write-docs'].includes(arg) &&
      !arg.startsWith('--systems=')
    ) {
      passThrough.push(arg);
    }
  }
  const summaries: string[] = [];
  for (const id of options.systems.filter((system) => system.startsWith('mailbus/'))) {
    const dir = path.resolve(options.outDir, 'profiles', id.replace('/', '-'));
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    log(`profiling ${id} into ${dir}`);
    const result = spawnSync(
      process.execPath,
      [
        `--cpu-prof`,
        `--cpu-prof-dir=${dir}`,
        RUN_SCRIPT,
        ...passThrough,
        '--systems',
        id,
        '--out',
        path.join(dir, 'run'),
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], timeout: PROFILE_RUN_TIMEOUT_MS },
    );
    if (result.status !== 0) {
      log(`profiled run of ${id} failed (${result.status ?? result.signal})`);
    }
    const files = fs
      .readdirSync(dir)
      .filter((name) => name.endsWith('.cpuprofile'))
      .map((name) => path.join(dir, name))
      .sort((a, b) => fs.statSync(b).size - fs.statSync(a).size);
    if (files[0] === undefined) {
      continue;
    }
    const text = formatSummary(
      `${id} (${path.basename(files[0])})`,
      summariseProfile(files[0], 25),
    );
    fs.writeFileSync(path.join(dir, 'summary.txt'), `${text}\n`);
    summaries.push(text);
  }
  say(summaries.join('\n\n'));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let options: BenchOptions | undefined;
  try {
    options = resolveOptions(argv);
  } catch (err) {
    process.stderr.write(`bench: ${reason(err)}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (!options) {
    process.stdout.write(USAGE);
    return;
  }
  jsonMode = options.json;
  if (options.profile) {
    profileMailbus(options, argv);
    return;
  }

  const outDir = path.resolve(options.outDir);
  fs.mkdirSync(outDir, { recursive: true });
  fs.mkdirSync(options.dataDir, { recursive: true });
  const workDir = fs.mkdtempSync(path.join(options.dataDir, 'mailbus-bench-'));
  const runTag = randomBytes(3).toString('hex');
  const endpoints: Endpoints = {
    maildirRoot: path.join(workDir, 'maildir'),
    maildirStorage: storageOf(workDir),
    redisUrl: options.redisUrl,
    amqpUrl: options.amqpUrl,
    postgresUrl: options.postgresUrl,
    pgBossSchema: `mailbus_bench_${runTag}`,
    natsUrl: options.natsUrl,
    fetchBatchSize: PG_BOSS_FETCH_BATCH,
  };

  const mail = await startMail(options, workDir, endpoints);
  const cleanUpNow = (): void => {
    mail.servers?.killSync();
    fs.rmSync(workDir, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: stopping the mail servers and removing ${workDir}`);
    cleanUpNow();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const started = Date.now();
  const meta = {
    type: 'meta',
    mode: options.quick ? 'quick' : 'full',
    date: new Date().toISOString(),
    machine: machine(),
    versions: versions(),
    workload: {
      messages: options.messages,
      payloadBytes: options.payloadBytes,
      concurrency: options.concurrency,
      inflight: options.inflight,
      batchSize: options.batchSize,
      latencySamples: options.latencySamples,
      latencyIntervalMs: options.latencyIntervalMs,
      runs: options.runs,
      phaseTimeoutMs: options.phaseTimeoutMs,
      warmupMessages: options.warmupMessages,
    },
    storage: {
      maildir: `${endpoints.maildirStorage}: ${endpoints.maildirRoot}`,
      dovecot: endpoints.mail
        ? `${endpoints.mail.storage}: ${endpoints.mail.maildir}`
        : (mail.error ?? 'not started'),
      postfixQueue: endpoints.mail?.postfixStorage ?? 'not started',
    },
  };
  emitJson(meta);
  log(
    `${meta.mode} run; Maildir on ${meta.storage.maildir}; Dovecot mail on ${meta.storage.dovecot}`,
  );

  const rows: ResultRow[] = [];
  const skipped: SkippedRow[] = [];
  const warnings = new Map<string, string[]>();
  const limits: LimitRow[] = [];
  try {
    // First, next to the mailbus systems that run first: this disk's speed drifts within minutes.
    if (options.limits) {
      limits.push(...(await measureLimits(endpoints, workDir, options.payloadBytes, log)));
    }
    for (const id of options.systems) {
      const needsMail = id === 'mailbus/imap' || id === 'mailbus/smtp';
      if (needsMail && !endpoints.mail) {
        skipped.push({
          type: 'skipped',
          ...splitId(id),
          metric: '*',
          value: null,
          unit: null,
          reason: mail.error ?? 'no mail servers',
        });
        continue;
      }
      const outcome = await benchSystem(id, options, endpoints, runTag);
      rows.push(...outcome.rows);
      skipped.push(...outcome.skipped);
      warnings.set(id, outcome.warnings);
    }
  } finally {
    if (mail.servers) {
      log('stopping the mail servers');
      await mail.servers
        .stop()
        .catch((err: unknown) => log(`stopping the mail servers: ${reason(err)}`));
    }
    fs.rmSync(workDir, { recursive: true, force: true });
  }

  // Report.
  const ids = mailbusFirst(options.systems);
  const ratioLine = ratios(rows);
  const header = [
    `mailbus benchmark, ${meta.mode} run, ${meta.date}: ${meta.machine.cores} cores (${meta.machine.cpu}), ` +
      `node ${meta.machine.node}, load average before ${meta.machine.loadAverage.join(' ')}`,
    `workload: ${options.messages} messages of ${options.payloadBytes}-byte JSON, ${options.concurrency} ` +
      `handlers per consumer, one producer with ${options.inflight} publishes in flight, batches of ` +
      `${options.batchSize}; latency over ${options.latencySamples} messages ${options.latencyIntervalMs} ms ` +
      `apart; each figure the median of ${options.runs} run(s), warm-up excluded; phases limited to ` +
      `${options.phaseTimeoutMs / 1000} s`,
    `clients: ${Object.entries(meta.versions)
      .map(([name, version]) => `${name} ${version}`)
      .join(', ')}`,
    `storage: mailbus Maildir on ${meta.storage.maildir}; Dovecot mail on ${meta.storage.dovecot}; ` +
      `Postfix queue on ${meta.storage.postfixQueue}`,
  ];
  say('');
  say(header.join('\n'));
  say('');
  say(mainTable(rows, skipped, ids));
  say('');
  say(rowDetails(rows, skipped, warnings));
  say('');
  say(ratioTables(ratioLine));
  const scaling = scalingTables(rows);
  if (scaling) {
    say('');
    say(scaling);
  }
  const limitLine = limitRatios(rows, limits);
  if (limits.length > 0) {
    say('');
    say(limitTables(limits, limitLine));
  }
  say('');
  say(
    `finished in ${((Date.now() - started) / 1000).toFixed(0)} s; load average after ` +
      machine().loadAverage.join(' '),
  );

  for (const row of [...rows, ...skipped, ...limits]) {
    emitJson(row);
  }
  emitJson(limitLine);
  emitJson(ratioLine);

  const subtitle =
    `${meta.mode} run ${meta.date.slice(0, 16)}Z, ${meta.machine.cores} cores, node ${meta.machine.node}; ` +
    `${options.messages} x ${options.payloadBytes} B, ${options.concurrency} handlers, median of ${options.runs}; ` +
    `Maildir on ${endpoints.maildirStorage.split(' ')[0]}, Dovecot on ${(endpoints.mail?.storage ?? '-').split(' ')[0]}`;
  const svg = chartSvg(rows, skipped, ids, subtitle);
  const chartFile = path.join(outDir, 'benchmark.svg');
  fs.writeFileSync(chartFile, svg);
  fs.writeFileSync(
    path.join(outDir, 'results.jsonl'),
    [meta, ...rows, ...skipped, ...limits, limitLine, ratioLine]
      .map((record) => JSON.stringify(record))
      .join('\n') + '\n',
  );
  log(`chart: ${chartFile}; results: ${path.join(outDir, 'results.jsonl')}`);
  if (options.writeDocs) {
    const docsFile = path.join(REPO_ROOT, 'docs', 'benchmark.svg');
    fs.writeFileSync(docsFile, svg);
    log(`chart written to ${docsFile}`);
  }
}

main().then(
  () => {
    // Clients that keep a socket or timer open (a pool, a reconnect timer) must not keep the
    // finished benchmark alive.
    setTimeout(() => process.exit(process.exitCode ?? 0), 1000).unref();
  },
  (err: unknown) => {
    process.stderr.write(
      `bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
