// `mailbus dlq TOPIC list|show ID|replay [ID...|--all]|purge [--older-than 30d]`: the dead
// letters of a group, as an operator handles them.

import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { connect } from '../../client.js';
import { ERROR_CODES, MailbusError } from '../../errors.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions, parseDurationMs } from '../options.js';
import { checkGroupExists } from '../groups.js';
import { table } from '../output.js';
import { progressOf } from '../progress.js';

interface DlqFlags extends GlobalFlags {
  group: string;
  all?: boolean;
  olderThan?: number;
  yes?: boolean;
  json?: boolean;
}

const ACTIONS = ['list', 'show', 'replay', 'purge'] as const;

function invalid(message: string): MailbusError {
  return new MailbusError(ERROR_CODES.INVALID_OPTION, message);
}

/** Asks on the terminal; without one, the caller must have said --yes. */
async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) {
    throw invalid(`${question.replace(/\?$/, '')}: add --yes to confirm without a terminal`);
  }
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await prompt.question(`${question} [y/N] `);
  prompt.close();
  return /^y(es)?$/i.test(answer.trim());
}

export function registerDlq(program: Command): void {
  const command = program
    .command('dlq')
    .description('list, show, replay or purge the dead letters of a group')
    .argument('<topic>', 'topic name')
    .argument('<action>', 'list, show ID, replay [ID...|--all] or purge')
    .argument('[ids...]', 'message ids, for show and replay')
    .option('--group <group>', 'consumer group', 'default')
    .option('--all', 'replay: every dead letter of the group')
    .option(
      '--older-than <duration>',
      'purge: only dead letters older than this (default: all of them)',
      parseDurationMs('--older-than', 0),
    )
    .option('--yes', 'purge: do not ask for confirmation')
    .option('--json', 'list: one JSON object per line')
    .addHelpText(
      'after',
      `
Examples:
  mailbus dlq orders --group billing list
  mailbus dlq orders --group billing show 0lq3k2p1a.00001.9f2c@mailbus
  mailbus dlq orders --group billing replay --all
  mailbus dlq orders --group billing purge --older-than 30d --yes`,
    );
  addConnectionFlags(command).action(
    async (topic: string, action: string, ids: string[], flags: DlqFlags) => {
      if (!(ACTIONS as readonly string[]).includes(action)) {
        throw invalid(`unknown dlq action "${action}": use ${ACTIONS.join(', ')}`);
      }
      if (action === 'show' && ids.length !== 1) {
        throw invalid('dlq show takes exactly one message id');
      }
      if (action === 'replay' && ids.length > 0 && flags.all) {
        throw invalid('dlq replay takes message ids or --all, not both');
      }
      if (action === 'replay' && ids.length === 0 && !flags.all) {
        throw invalid('dlq replay needs the ids of the dead letters to replay, or --all');
      }

      const bus = await connect(connectOptions(flags));
      try {
        await checkGroupExists(bus, topic, flags.group);
        const letters = bus.deadLetters(topic, flags.group);
        if (action === 'list') {
          const list = await letters.list();
          if (flags.json) {
            const lines = list.map((letter) => JSON.stringify(letter));
            process.stdout.write(lines.map((line) => `${line}\n`).join(''));
          } else if (list.length === 0) {
            process.stdout.write(`no dead letters in ${topic}/${flags.group}\n`);
          } else {
            const rows = list.map((letter) => [
              letter.id,
              letter.storedAt.toISOString(),
              letter.attempts,
              letter.lastError.slice(0, 60),
            ]);
            process.stdout.write(`${table(['ID', 'FAILED AT', 'ATTEMPTS', 'LAST ERROR'], rows)}\n`);
          }
        } else if (action === 'show') {
          const letter = await letters.show(ids[0] as string);
          process.stdout.write(letter.report.toString('utf8'));
        } else if (action === 'replay') {
          const tracker = progressOf('replaying');
          const count = await letters.replay(flags.all ? 'all' : ids, tracker.listen);
          tracker.stop();
          const noun = count === 1 ? 'dead letter' : 'dead letters';
          process.stdout.write(`replayed ${count} ${noun} into ${topic}/${flags.group}\n`);
        } else {
          const before = new Date(Date.now() - (flags.olderThan ?? 0));
          const what = flags.olderThan === undefined ? 'every dead letter' : 'old dead letters';
          const question = `Delete ${what} of ${topic}/${flags.group}?`;
          if (!flags.yes && !(await confirm(question))) {
            process.stdout.write('nothing deleted\n');
            return;
          }
          const tracker = progressOf('purging');
          const count = await letters.purge(before, tracker.listen);
          tracker.stop();
          process.stdout.write(`deleted ${count} dead letters\n`);
        }
      } finally {
        await bus.close();
      }
    },
  );
}
