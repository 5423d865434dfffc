// `mailbus consume TOPIC`: runs a worker. Without --exec it prints each message as one JSON line
// and acks it; with --exec it runs a shell command per message (payload on stdin, metadata in
// MAILBUS_* variables) and acks when the command exits 0.

import { spawn } from 'node:child_process';
import type { Command } from 'commander';
import { connect } from '../../client.js';
import { ERROR_CODES, MailbusError } from '../../errors.js';
import type { HandlerContext } from '../../consumer/worker.js';
import type { Message } from '../../message/message.js';
import type { HttpServer } from '../../http/listen.js';
import type { GlobalFlags } from '../options.js';
import {
  addConnectionFlags,
  connectOptions,
  parseCount,
  parseDurationMs,
  parsePort,
  parseRetention,
} from '../options.js';

interface ConsumeFlags extends GlobalFlags {
  group: string;
  exec?: string;
  concurrency: number;
  prefetch?: number;
  max?: number;
  wait?: number;
  maxAttempts?: number;
  lease?: number;
  backoff?: number;
  timeout?: number;
  archiveRetention?: number;
  deadRetention?: number;
  verify?: boolean;
  signatureWindow?: number;
  metricsPort?: number;
  metricsHost: string;
}

/** Most bytes of a failed command's stderr kept as the attempt's error. */
const EXEC_ERROR_TAIL_BYTES = 500;

// Variables that may hold the worker's own credentials: a handler command has no need of them.
const SECRET_VARIABLES = [
  'MAILBUS_URL',
  'MAILBUS_SMTP_URL',
  'MAILBUS_PASSWORD',
  'MAILBUS_PASSWORD_FILE',
  'MAILBUS_SIGNING_KEY',
  'MAILBUS_VERIFY_KEYS',
  'MAILBUS_DASHBOARD_TOKEN',
];

/** The payload as a command reads it: text as it is, anything else as compact JSON. */
export function payloadText(message: Message): string {
  return typeof message.payload === 'string' && message.contentType !== 'application/json'
    ? message.payload
    : JSON.stringify(message.payload);
}

function messageLine(message: Message): string {
  const { id, topic, group, attempt, headers, payload } = message;
  return JSON.stringify({ id, topic, group, attempt, key: message.key, headers, payload });
}

function execEnvironment(message: Message): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of SECRET_VARIABLES) {
    delete env[name];
  }
  return {
    ...env,
    MAILBUS_ID: message.id,
    MAILBUS_TOPIC: message.topic,
    MAILBUS_GROUP: message.group,
    MAILBUS_ATTEMPT: String(message.attempt),
    MAILBUS_KEY: message.key ?? '',
    MAILBUS_PRIORITY: message.priority,
    MAILBUS_SUBJECT: message.subject,
    MAILBUS_CONTENT_TYPE: message.contentType,
    MAILBUS_HEADERS: JSON.stringify(message.headers),
  };
}

/**
 * Runs `command` through /bin/sh for one message. The message never becomes part of the command
 * line: the payload goes to stdin and the metadata into the environment, so no content of a
 * message can be run as shell code.
 */
export function runCommand(command: string, message: Message, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    // The command runs in a process group of its own, so that when the attempt's time limit
    // passes the whole group is killed: the shell and whatever it started.
    const child = spawn('/bin/sh', ['-c', command], {
      env: execEnvironment(message),
      stdio: ['pipe', 'inherit', 'pipe'],
      detached: true,
    });
    const group = child.pid;
    if (group !== undefined) {
      runningCommands.add(group);
    }
    const kill = (): void => {
      killCommand(group);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', kill, { once: true });
    child.on('exit', () => {
      signal.removeEventListener('abort', kill);
      if (group !== undefined) {
        runningCommands.delete(group);
      }
    });
    let stderrTail = '';
    child.stderr.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
      stderrTail = (stderrTail + chunk.toString('utf8')).slice(-EXEC_ERROR_TAIL_BYTES);
    });
    child.stdin.on('error', () => undefined); // a command that does not read stdin is fine
    child.stdin.end(payloadText(message));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) {
        resolve();
        return;
      }
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const detail = stderrTail.trim() ? `: ${stderrTail.trim()}` : '';
      reject(new Error(`command ${how}${detail}`));
    });
  });
}

/**
 * The process groups of the --exec commands running now. They are groups of their own, so a
 * Ctrl-C on the terminal does not reach them: a consume that stops at once kills them itself.
 */
const runningCommands = new Set<number>();

function killCommand(group: number | undefined): void {
  if (group === undefined) {
    return;
  }
  try {
    process.kill(-group, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Writes one line; resolves once it is written, so a message is acked only after that. */
function printLine(line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(line, (err) => (err ? reject(err) : resolve()));
  });
}

export function registerConsume(program: Command): void {
  const command = program
    .command('consume')
    .description('run a worker: print (or --exec) each message of a group, then ack it')
    .argument('<topic>', 'topic name')
    .option('--group <group>', 'consumer group', 'default')
    .option('--exec <command>', 'run this shell command per message; exit 0 acks it')
    .option('--concurrency <n>', 'messages handled at once', parseCount('--concurrency'), 1)
    .option(
      '--prefetch <n>',
      'messages claimed ahead (default: the concurrency)',
      parseCount('--prefetch'),
    )
    .option('--max <n>', 'exit 0 after this many messages', parseCount('--max'))
    .option(
      '--wait <duration>',
      'exit 0 once nothing arrived for this long (10s, 2m)',
      parseDurationMs('--wait'),
    )
    .option(
      '--max-attempts <n>',
      'attempts before a message is dead-lettered (5)',
      parseCount('--max-attempts'),
    )
    .option(
      '--lease <duration>',
      'how long claims outlive a silent worker (30s)',
      parseDurationMs('--lease'),
    )
    .option(
      '--backoff <duration>',
      'first retry delay, doubling after (1s)',
      parseDurationMs('--backoff', 0),
    )
    .option('--timeout <duration>', 'time limit of one attempt (5m)', parseDurationMs('--timeout'))
    .option(
      '--archive-retention <duration>',
      'keep handled messages this long; 0 or forever (7d)',
      parseRetention('--archive-retention'),
    )
    .option(
      '--dead-retention <duration>',
      'keep dead letters this long (more than 0), or forever (30d)',
      parseRetention('--dead-retention'),
    )
    .option('--verify', 'handle only signed messages; quarantine the rest (MAILBUS_VERIFY_KEYS)')
    .option('--verify-keys-file <file>', 'the verification keys, one KEY-ID:SECRET a line')
    .option(
      '--signature-window <duration>',
      'how old a signature may be, and the replay window (5m)',
      parseDurationMs('--signature-window'),
    )
    .option(
      '--metrics-port <port>',
      'serve Prometheus metrics at http://HOST:PORT/metrics',
      parsePort('--metrics-port'),
    )
    .option('--metrics-host <host>', 'the address the metrics listen on', '127.0.0.1')
    .addHelpText(
      'after',
      `
--exec runs the command with /bin/sh for each message. The payload arrives on stdin (text as it
is, JSON compact); MAILBUS_ID, MAILBUS_TOPIC, MAILBUS_GROUP, MAILBUS_ATTEMPT, MAILBUS_KEY,
MAILBUS_PRIORITY, MAILBUS_SUBJECT, MAILBUS_CONTENT_TYPE and MAILBUS_HEADERS (JSON) describe it.

Examples:
  mailbus consume orders
  mailbus consume orders --group billing --exec './bill.sh' --concurrency 4
  mailbus consume orders --max 100 --wait 5s > orders.jsonl
  MAILBUS_VERIFY_KEYS=k2026:SECRET,k2025:OLDSECRET mailbus consume orders --verify
  mailbus consume orders --metrics-port 9464`,
    );
  addConnectionFlags(command).action(async (topic: string, flags: ConsumeFlags) => {
    // A SIGINT or SIGTERM while connecting ends the command at once: there is nothing to hand
    // back yet. Without a handler Node would end it by the signal instead of with exit code 0.
    const stopEarly = (): never => process.exit(0);
    process.once('SIGINT', stopEarly);
    process.once('SIGTERM', stopEarly);
    const bus = await connect(connectOptions(flags)).finally(() => {
      process.off('SIGINT', stopEarly);
      process.off('SIGTERM', stopEarly);
    });
    let metricsServer: HttpServer | undefined;
    if (flags.metricsPort !== undefined) {
      // Loaded only when asked for: a worker without metrics starts faster without them.
      const { QueueMetrics } = await import('../../metrics/metrics.js');
      const { startMetricsServer } = await import('../../metrics/server.js');
      const metrics = new QueueMetrics(bus);
      try {
        metricsServer = await startMetricsServer(metrics, {
          port: flags.metricsPort,
          host: flags.metricsHost,
        });
      } catch (err) {
        await bus.close();
        const reason = err instanceof Error ? err.message : String(err);
        throw new MailbusError(
          ERROR_CODES.INVALID_OPTION,
          `cannot serve metrics on ${flags.metricsHost}:${flags.metricsPort}: ${reason}`,
        );
      }
      process.stderr.write(
        `mailbus: metrics at http://${flags.metricsHost}:${metricsServer.port}/metrics\n`,
      );
    }
    const execCommand = flags.exec;
    const handler = execCommand
      ? (message: Message, { signal }: HandlerContext) => runCommand(execCommand, message, signal)
      : (message: Message) => printLine(`${messageLine(message)}\n`);

    const worker = bus.consume(topic, handler, {
      group: flags.group,
      concurrency: flags.concurrency,
      prefetch: flags.prefetch,
      maxMessages: flags.max,
      idleTimeoutMs: flags.wait,
      maxAttempts: flags.maxAttempts,
      leaseMs: flags.lease,
      backoffMs: flags.backoff,
      handlerTimeoutMs: flags.timeout,
      archiveRetentionMs: flags.archiveRetention,
      deadRetentionMs: flags.deadRetention,
      verify: flags.verify,
      signatureWindowMs: flags.signatureWindow,
    });
    // A reader that went away (`consume | head`) ends the worker like a SIGTERM: the message
    // whose line could not be written is not acked, and the rest are handed back.
    process.stdout.on('error', () => void worker.close());
    worker.on('settled', (message, outcome) => {
      if (outcome === 'dead') {
        const id = message?.id ?? 'a message that could not be decoded';
        process.stderr.write(`mailbus: ${id} moved to the dead letters of ${flags.group}\n`);
      }
      if (outcome === 'quarantined') {
        process.stderr.write(`mailbus: a message was quarantined: see mailbus quarantine\n`);
      }
    });
    worker.on('warning', (err) => {
      process.stderr.write(`mailbus: warning: ${err.message}\n`);
    });
    // The first signal stops gracefully; a second one stops at once, killing running commands.
    // Their messages stay claimed until the lease runs out, and are then handled again.
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        runningCommands.forEach(killCommand);
        process.exit(signal === 'SIGINT' ? 130 : 143);
      }
      stopping = true;
      if (process.stderr.isTTY) {
        process.stderr.write('mailbus: stopping; press Ctrl-C again to stop at once\n');
      }
      void worker.close();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);

    try {
      await worker.done;
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      await metricsServer?.close();
      await bus.close();
    }
  });
}
