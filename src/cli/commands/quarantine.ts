// `mailbus quarantine TOPIC list|show ID|release ID...`: the messages of a group that failed
// verification, as an operator looks at them and decides.

import type { Command } from 'commander';
import { connect } from '../../client.js';
import { ERROR_CODES, MailbusError } from '../../errors.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions } from '../options.js';
import { checkGroupExists } from '../groups.js';
import { table } from '../output.js';

interface QuarantineFlags extends GlobalFlags {
  group: string;
  json?: boolean;
}

const ACTIONS = ['list', 'show', 'release'] as const;

// Quarantined mail is hostile by assumption: no control character of it reaches the terminal,
// where an escape sequence could rewrite what the operator sees.
function safe(text: string): string {
  // eslint-disable-next-line no-control-regex -- finding control characters is the point
  return text.replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/g, '?');
}

function invalid(message: string): MailbusError {
  return new MailbusError(ERROR_CODES.INVALID_OPTION, message);
}

export function registerQuarantine(program: Command): void {
  const command = program
    .command('quarantine')
    .description('list, show or release the messages of a group that failed verification')
    .argument('<topic>', 'topic name')
    .argument('<action>', 'list, show ID or release ID...')
    .argument('[ids...]', 'message ids, for show and release')
    .option('--group <group>', 'consumer group', 'default')
    .option('--verify-keys-file <file>', 'release: seal with the first of these keys')
    .option('--json', 'list: one JSON object per line')
    .addHelpText(
      'after',
      `
A released message goes back to the group's waiting messages. With verification keys
(MAILBUS_VERIFY_KEYS or --verify-keys-file) it is sealed, and verifying consumers hand it to
their handler; without, they check it again.

Examples:
  mailbus quarantine orders --group billing list
  mailbus quarantine orders --group billing show 0lq3k2p1a.00001.9f2c@mailbus
  mailbus quarantine orders --group billing release 0lq3k2p1a.00001.9f2c@mailbus`,
    );
  addConnectionFlags(command).action(
    async (topic: string, action: string, ids: string[], flags: QuarantineFlags) => {
      if (!(ACTIONS as readonly string[]).includes(action)) {
        throw invalid(`unknown quarantine action "${action}": use ${ACTIONS.join(', ')}`);
      }
      if (action === 'show' && ids.length !== 1) {
        throw invalid('quarantine show takes exactly one message id');
      }
      if (action === 'release' && ids.length === 0) {
        throw invalid('quarantine release takes one or more message ids');
      }

      const bus = await connect(connectOptions(flags));
      try {
        await checkGroupExists(bus, topic, flags.group);
        const quarantine = bus.quarantine(topic, flags.group);
        if (action === 'list') {
          const list = await quarantine.list();
          if (flags.json) {
            const lines = list.map((message) => JSON.stringify(message));
            process.stdout.write(lines.map((line) => `${line}\n`).join(''));
          } else if (list.length === 0) {
            process.stdout.write(`no quarantined messages in ${topic}/${flags.group}\n`);
          } else {
            const rows = list.map((message) => [
              safe(message.id),
              message.storedAt.toISOString(),
              message.reason,
              safe(message.detail.slice(0, 60)),
            ]);
            process.stdout.write(`${table(['ID', 'QUARANTINED AT', 'REASON', 'DETAIL'], rows)}\n`);
          }
        } else if (action === 'show') {
          const message = await quarantine.show(ids[0] as string);
          process.stdout.write(safe(message.raw.toString('utf8')));
        } else {
          const count = await quarantine.release(ids);
          process.stdout.write(`released ${count} messages into ${topic}/${flags.group}\n`);
        }
      } finally {
        await bus.close();
      }
    },
  );
}
