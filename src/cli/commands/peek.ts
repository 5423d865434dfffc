// `mailbus peek TOPIC [--group G] [--state waiting] [-n 10]`: prints the messages of one state
// of a group, the oldest first, without claiming them: no consumer misses one for being looked
// at, and no attempt is counted.

import type { Command } from 'commander';
import { viewMessage } from '../../admin/messages.js';
import type { MessageView } from '../../admin/messages.js';
import { connect } from '../../client.js';
import { ERROR_CODES, MailbusError } from '../../errors.js';
import { MESSAGE_STATES } from '../../store/search.js';
import { STATE_FOLDERS } from '../../store/store.js';
import type { MessageState } from '../../store/store.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions, parseCount } from '../options.js';
import { checkGroupExists } from '../groups.js';
import { table } from '../output.js';

interface PeekFlags extends GlobalFlags {
  group: string;
  state: string;
  n: number;
  json?: boolean;
}

/** One message as a JSON line: what `consume` prints, with where it is and how it fared. */
export function viewLine(view: MessageView): string {
  const { id, topic, group, state, key, attempts, lastError, headers, payload, location } = view;
  const storedAt = view.storedAt.toISOString();
  return JSON.stringify({
    id,
    topic,
    group,
    state,
    key,
    attempts,
    lastError,
    storedAt,
    location,
    headers,
    payload,
  });
}

export function parseState(value: string): MessageState {
  if (!(MESSAGE_STATES as string[]).includes(value)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `--state must be one of ${MESSAGE_STATES.join(', ')}, not "${value}"`,
    );
  }
  return value as MessageState;
}

/** Most characters of a payload shown in the table; --json prints it whole. */
const PAYLOAD_PREVIEW_CHARS = 50;

export function registerPeek(program: Command): void {
  const command = program
    .command('peek')
    .description('print the messages of a group without claiming them (oldest first)')
    .argument('<topic>', 'topic name')
    .option('--group <group>', 'consumer group', 'default')
    .option('--state <state>', `one of ${MESSAGE_STATES.join(', ')}`, 'waiting')
    .option('-n <count>', 'at most this many messages', parseCount('-n'), 10)
    .option('--json', 'one JSON object per line, with headers and the whole payload')
    .addHelpText(
      'after',
      `
Examples:
  mailbus peek orders
  mailbus peek orders --group billing --state dead -n 3 --json`,
    );
  addConnectionFlags(command).action(async (topic: string, flags: PeekFlags) => {
    const state = parseState(flags.state);
    const bus = await connect(connectOptions(flags));
    try {
      await checkGroupExists(bus, topic, flags.group);
      const place = { topic, group: flags.group, folder: STATE_FOLDERS[state] };
      const stored = await bus.store.list(place, { limit: flags.n });
      const views = await Promise.all(
        stored.map((message) => viewMessage({ ...message, topic, group: flags.group, state })),
      );

      if (flags.json) {
        process.stdout.write(views.map((view) => `${viewLine(view)}\n`).join(''));
        return;
      }
      if (views.length === 0) {
        process.stdout.write(`no ${state} messages in ${topic}/${flags.group}\n`);
        return;
      }
      const rows = views.map((view) => [
        view.id,
        view.storedAt.toISOString(),
        view.attempts,
        view.key ?? '',
        JSON.stringify(view.payload).slice(0, PAYLOAD_PREVIEW_CHARS),
      ]);
      process.stdout.write(`${table(['ID', 'STORED', 'ATTEMPTS', 'KEY', 'PAYLOAD'], rows)}\n`);
    } finally {
      await bus.close();
    }
  });
}
