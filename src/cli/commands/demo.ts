// `mailbus demo` (what `npm start` runs): the e-commerce pipeline on the embedded Maildir, or on
// a mail server with --url/--smtp-url, with a live progress line and a summary at the end.

import type { Command } from 'commander';
import { connect } from '../../client.js';
import { ERROR_CODES, MailbusError } from '../../errors.js';
import { REJECTED_TOPIC, REJECTING_GROUP, leaveRejectedOrders } from '../../demo/rejected.js';
import { runDemo } from '../../demo/demo.js';
import type { DemoProgress, DemoResult } from '../../demo/demo.js';
import { DEMO_GROUPS, DEMO_TOPICS } from '../../demo/events.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions, parseCount, parseDurationMs } from '../options.js';
import { formatNumber, table } from '../output.js';

/** How long the demo may take before it gives up and reports what is missing. */
const DEMO_TIMEOUT_MS = 5 * 60_000;

interface DemoFlags extends GlobalFlags {
  count: number;
  workers: number;
  concurrency: number;
  timeout?: number;
  json?: boolean;
}

function progressLine(progress: DemoProgress, count: number): string {
  const groups = DEMO_GROUPS.map(
    (group) => `${group} ${formatNumber(progress.handled[group] ?? 0)}`,
  ).join(' · ');
  const seconds = (progress.elapsedMs / 1000).toFixed(1);
  return `published ${formatNumber(progress.published)}/${formatNumber(count)} · ${groups} · ${seconds}s`;
}

function summary(result: DemoResult, location: string, kind: string): string {
  const rows = DEMO_GROUPS.map((group) => {
    const row = result.groups[group] ?? { handled: 0, duplicates: 0, lost: 0 };
    return [
      group,
      formatNumber(row.handled),
      formatNumber(row.duplicates),
      formatNumber(row.lost),
      formatNumber(row.handled / result.seconds),
    ];
  });
  const lines = [
    '',
    `mailbus demo: ${formatNumber(result.published)} events, ${DEMO_TOPICS.length} topics, ` +
      `${DEMO_GROUPS.length} groups, ${result.seconds.toFixed(2)} s`,
    '',
    table(['GROUP', 'HANDLED', 'DUPLICATES', 'LOST', 'MSG/S'], rows),
    '',
    `published ${formatNumber(result.published)} ` +
      `(${formatNumber(result.published / result.seconds)} msg/s); all groups together handled ` +
      `${formatNumber(result.messagesPerSecond)} msg/s`,
  ];
  if (kind === 'maildir') {
    // Read-only: a mail client that syncs a folder renames files under the workers. The mask
    // shows Maildir++ folders, whose names start with a dot, in the folder browser.
    const settings = `set folder=${location} mask=. read_only`;
    const folder = `+.${DEMO_TOPICS[0]}.${DEMO_GROUPS[2]}.Archive`;
    lines.push(
      '',
      `The queue is a Maildir at ${location}; open it in a mail client`,
      '(c then ? lists every folder):',
      `  mutt -e '${settings}' -f ${folder}`,
      `  neomutt -e '${settings}' -f ${folder}`,
      'or count it:',
      `  npx mailbus stats`,
    );
  } else {
    lines.push('', `The queue is the mailbox account at ${location}: open it in any mail client.`);
  }
  lines.push(
    result.complete ? '\nevery group handled every event.' : '\nINCOMPLETE: see LOST above.',
  );
  return lines.join('\n');
}

export function registerDemo(program: Command): void {
  const command = program
    .command('demo')
    .description('run an e-commerce event pipeline: 3 topics, 3 consumer groups, many workers')
    .option('--count <n>', 'events to publish', parseCount('--count'), 3000)
    .option('--workers <n>', 'workers per group and topic', parseCount('--workers'), 2)
    .option('--concurrency <n>', 'handlers per worker', parseCount('--concurrency'), 4)
    .option(
      '--timeout <duration>',
      'give up after this long (default 5m)',
      parseDurationMs('--timeout'),
    )
    .option('--json', 'print the summary as one JSON object');
  addConnectionFlags(command).action(async (flags: DemoFlags) => {
    const bus = await connect(connectOptions(flags));
    const interactive = process.stderr.isTTY && !flags.json;
    let lastPlainLine = 0;
    const onProgress = (progress: DemoProgress): void => {
      if (flags.json) {
        return;
      }
      const line = progressLine(progress, flags.count);
      if (interactive) {
        process.stderr.write(`\r\x1b[2K${line}`);
      } else if (progress.elapsedMs - lastPlainLine >= 2000) {
        lastPlainLine = progress.elapsedMs;
        process.stderr.write(`${line}\n`);
      }
    };

    let result: DemoResult;
    let rejected = 0;
    try {
      result = await runDemo(bus, {
        count: flags.count,
        workersPerGroup: flags.workers,
        concurrency: flags.concurrency,
        timeoutMs: flags.timeout ?? DEMO_TIMEOUT_MS,
        onProgress,
      });
      if (result.complete) {
        rejected = await leaveRejectedOrders(bus);
      }
    } finally {
      await bus.close();
    }
    if (interactive) {
      process.stderr.write('\r\x1b[2K');
    }

    if (flags.json) {
      const { published, groups, seconds } = result;
      process.stdout.write(`${JSON.stringify({ published, groups, seconds, rejected })}\n`);
    } else {
      process.stdout.write(`${summary(result, bus.store.location, bus.store.kind)}\n`);
      const others = DEMO_GROUPS.filter((group) => group !== REJECTING_GROUP)
        .map((group) => `${REJECTED_TOPIC}/${group}`)
        .join(' and ');
      process.stdout.write(
        `\n${rejected} orders with a total below zero were rejected by ${REJECTING_GROUP}: ` +
          `they wait as dead letters in ${REJECTED_TOPIC}/${REJECTING_GROUP}, and as waiting ` +
          `messages in ${others}, which no consumer reads any more.\n` +
          'See them, search and replay them in the dashboard: npx mailbus dashboard\n' +
          'A replayed order waits for the order service; handle it with:\n' +
          `  npx mailbus consume ${REJECTED_TOPIC} --group ${REJECTING_GROUP} --max 1\n`,
      );
    }
    if (!result.complete) {
      throw new MailbusError(
        ERROR_CODES.STORAGE,
        'the demo did not finish: some events were not handled',
      );
    }
  });
}
