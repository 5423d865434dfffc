// `mailbus stats [TOPIC] [--watch]`: per topic and group, how many messages wait, are in
// flight, were handled, are dead, and were quarantined, and how many consumers were seen
// recently; with --watch the table is drawn again every interval, in place on a terminal and
// one table after another anywhere else.

import type { Command } from 'commander';
import { connect } from '../../client.js';
import type { Mailbus } from '../../client.js';
import type { GroupStats } from '../../store/store.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions, parseDurationMs } from '../options.js';
import { formatNumber, table } from '../output.js';

interface StatsFlags extends GlobalFlags {
  json?: boolean;
  watch?: boolean;
  /** Milliseconds; the default is applied where it is used, so that --help shows it once. */
  interval?: number;
}

/** How often --watch draws the table by default. */
const WATCH_INTERVAL_MS = 2_000;

// ANSI: cursor to the top left, then erase the screen: the table is redrawn in place.
const CLEAR_SCREEN = '\x1b[H\x1b[2J';

function statsTable(rows: GroupStats[]): string {
  const header = [
    ...['TOPIC', 'GROUP', 'WAITING', 'SCHEDULED', 'IN FLIGHT', 'HANDLED', 'DEAD'],
    'QUARANTINED',
    'CONSUMERS',
  ];
  const cells = rows.map((row) => [
    row.topic,
    row.group,
    formatNumber(row.waiting),
    formatNumber(row.scheduled),
    formatNumber(row.inFlight),
    formatNumber(row.handled),
    formatNumber(row.dead),
    formatNumber(row.quarantined),
    formatNumber(row.consumers),
  ]);
  return table(header, cells);
}

export function registerStats(program: Command): void {
  const command = program
    .command('stats')
    .description(
      'show waiting, scheduled, in-flight, handled, dead and quarantined messages per group, ' +
        'and its consumers running now (a crashed one counts for 5 minutes)',
    )
    .argument('[topic]', 'only this topic')
    .option('--json', 'print one JSON object (one per interval with --watch)')
    .option('--watch', 'draw the table again every interval until interrupted')
    .option(
      '--interval <duration>',
      'how often --watch draws it (2s)',
      parseDurationMs('--interval'),
    );
  addConnectionFlags(command).action(async (topic: string | undefined, flags: StatsFlags) => {
    const bus = await connect(connectOptions(flags));
    try {
      if (flags.watch) {
        await watch(bus, topic, flags);
        return;
      }
      const rows = await bus.stats(topic);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ groups: rows })}\n`);
        return;
      }
      if (rows.length === 0) {
        process.stdout.write(`no topics in ${bus.store.location}\n`);
        return;
      }
      process.stdout.write(`${statsTable(rows)}\n`);
    } finally {
      await bus.close();
    }
  });
}

/** Draws the stats every interval until SIGINT or SIGTERM. */
async function watch(bus: Mailbus, topic: string | undefined, flags: StatsFlags): Promise<void> {
  const stopping = new AbortController();
  const stop = (): void => stopping.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.stdout.on('error', stop);
  const terminal = process.stdout.isTTY === true;
  const intervalMs = flags.interval ?? WATCH_INTERVAL_MS;

  try {
    while (!stopping.signal.aborted) {
      const rows = await bus.stats(topic);
      const at = new Date().toISOString();
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ at, groups: rows })}\n`);
      } else {
        const body = rows.length === 0 ? `no topics in ${bus.store.location}` : statsTable(rows);
        const heading = `mailbus stats, every ${intervalMs / 1000} s: ${at}`;
        process.stdout.write(`${terminal ? CLEAR_SCREEN : ''}${heading}\n\n${body}\n\n`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, intervalMs);
        stopping.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
