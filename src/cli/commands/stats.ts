// `mailbus stats [TOPIC]`: per topic and group, how many messages wait, are in flight, were
// handled, are dead, and were quarantined for failing verification.

import type { Command } from 'commander';
import { connect } from '../../client.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions } from '../options.js';
import { formatNumber, table } from '../output.js';

interface StatsFlags extends GlobalFlags {
  json?: boolean;
}

export function registerStats(program: Command): void {
  const command = program
    .command('stats')
    .description(
      'show waiting, scheduled, in-flight, handled, dead and quarantined messages per group',
    )
    .argument('[topic]', 'only this topic')
    .option('--json', 'print one JSON object');
  addConnectionFlags(command).action(async (topic: string | undefined, flags: StatsFlags) => {
    const bus = await connect(connectOptions(flags));
    try {
      const rows = await bus.stats(topic);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ groups: rows })}\n`);
        return;
      }
      if (rows.length === 0) {
        process.stdout.write(`no topics in ${bus.store.location}\n`);
        return;
      }
      const header = [
        ...['TOPIC', 'GROUP', 'WAITING', 'SCHEDULED', 'IN FLIGHT', 'HANDLED', 'DEAD'],
        'QUARANTINED',
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
      ]);
      process.stdout.write(`${table(header, cells)}\n`);
    } finally {
      await bus.close();
    }
  });
}
