// `mailbus subscribe TOPIC GROUP [--from now|earliest|TIME]`: creates a consumer group, the
// mailing-list member that gets its own copy of every message published from now on, or first
// a copy of the topic's earlier messages (a replay from its inbox), with its progress shown
// when it is long.

import type { Command } from 'commander';
import { connect } from '../../client.js';
import type { StartPoint } from '../../client.js';
import { groupAddress } from '../../transport/addresses.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions, parseStart } from '../options.js';
import { progressOf } from '../progress.js';

interface SubscribeFlags extends GlobalFlags {
  from?: StartPoint;
}

export function registerSubscribe(program: Command): void {
  const command = program
    .command('subscribe')
    .description('create a consumer group: it receives every message published from now on')
    .argument('<topic>', 'topic name')
    .argument('<group>', 'group name')
    .option(
      '--from <when>',
      'a new group starts with the topic messages since: now (default), earliest, or an ISO time',
      parseStart('--from'),
    );
  addConnectionFlags(command).action(
    async (topic: string, group: string, flags: SubscribeFlags) => {
      const options = connectOptions(flags);
      const bus = await connect(options);
      try {
        const tracker = progressOf('backfilling');
        const { backfilled } = await bus
          .subscribe(topic, group, { from: flags.from, onProgress: tracker.listen })
          .finally(() => tracker.stop());
        const since = flags.from === undefined || flags.from === 'now' ? '' : describe(flags.from);
        process.stdout.write(`subscribed group ${group} to topic ${topic}${since}\n`);
        if (since) {
          const noun = backfilled === 1 ? 'message' : 'messages';
          process.stdout.write(`backfilled ${backfilled} ${noun} from the topic\n`);
        }
        if (options.address) {
          process.stdout.write(`its address: ${groupAddress(options.address, topic, group)}\n`);
        }
      } finally {
        await bus.close();
      }
    },
  );
}

function describe(from: StartPoint): string {
  return from instanceof Date ? ` from ${from.toISOString()}` : ' from its earliest message';
}
