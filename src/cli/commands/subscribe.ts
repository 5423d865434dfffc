// `mailbus subscribe TOPIC GROUP`: creates a consumer group, the mailing-list member that gets
// its own copy of every message published from now on.

import type { Command } from 'commander';
import { connect } from '../../client.js';
import { groupAddress } from '../../transport/addresses.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions } from '../options.js';

export function registerSubscribe(program: Command): void {
  const command = program
    .command('subscribe')
    .description('create a consumer group: it receives every message published from now on')
    .argument('<topic>', 'topic name')
    .argument('<group>', 'group name');
  addConnectionFlags(command).action(async (topic: string, group: string, flags: GlobalFlags) => {
    const options = connectOptions(flags);
    const bus = await connect(options);
    try {
      await bus.subscribe(topic, group);
      process.stdout.write(`subscribed group ${group} to topic ${topic}\n`);
      if (options.address) {
        process.stdout.write(`its address: ${groupAddress(options.address, topic, group)}\n`);
      }
    } finally {
      await bus.close();
    }
  });
}
