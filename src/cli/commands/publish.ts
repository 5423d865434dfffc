// `mailbus publish TOPIC [JSON]`: one message from the argument or stdin, or with --lines one
// message per stdin line, published in batches. Prints each message id on its own line.

import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { connect } from '../../client.js';
import { ERROR_CODES, MailbusError, errorText } from '../../errors.js';
import type { OutgoingMessage, Priority } from '../../message/message.js';
import type { GlobalFlags } from '../options.js';
import {
  addConnectionFlags,
  collectHeader,
  connectOptions,
  parseCount,
  parseDurationMs,
  parseTime,
} from '../options.js';

/** Lines per publish call with --lines: one store round trip (and one fsync) per batch. */
const LINES_PER_BATCH = 100;

interface PublishFlags extends GlobalFlags {
  lines?: boolean;
  key?: string;
  id?: string;
  header?: Record<string, string>;
  priority?: Priority;
  subject?: string;
  batch: number;
  delay?: number;
  notBefore?: Date;
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new MailbusError(
      ERROR_CODES.INVALID_PAYLOAD,
      `${where} is not valid JSON: ${errorText(err)}`,
    );
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function registerPublish(program: Command): void {
  const command = program
    .command('publish')
    .description('publish a message (JSON from the argument, else stdin); prints its id')
    .argument('<topic>', 'topic name')
    .argument('[json]', 'the payload as JSON; read from stdin when left out')
    .option('--lines', 'read stdin as one JSON payload per line, one message each')
    .option('--key <key>', 'ordering key, carried in X-Mailbus-Key')
    .option('--id <id>', 'message id to use (becomes the Message-ID)')
    .option('--header <name=value>', 'add a header field (repeatable)', collectHeader)
    .option('--priority <priority>', 'high or normal', 'normal')
    .option('--subject <subject>', 'the Subject a mail client shows')
    .option(
      '--signing-key-file <file>',
      'sign with the key in this file, KEY-ID:SECRET (MAILBUS_SIGNING_KEY)',
    )
    .option(
      '--delay <duration>',
      'hand it out no earlier than this from now (90s, 2h)',
      parseDurationMs('--delay', 0),
    )
    .option(
      '--not-before <time>',
      'hand it out no earlier than this ISO time',
      parseTime('--not-before'),
    )
    .option(
      '--batch <n>',
      'messages per publish call with --lines',
      parseCount('--batch'),
      LINES_PER_BATCH,
    )
    .addHelpText(
      'after',
      `
Examples:
  mailbus publish orders '{"orderId": 1}'
  echo '{"orderId": 2}' | mailbus publish orders --key customer-7
  cat events.jsonl | mailbus publish orders --lines`,
    );
  addConnectionFlags(command).action(
    async (topic: string, json: string | undefined, flags: PublishFlags) => {
      if (flags.lines && (json !== undefined || flags.id !== undefined)) {
        throw new MailbusError(
          ERROR_CODES.INVALID_OPTION,
          '--lines reads payloads from stdin: it takes neither a JSON argument nor --id',
        );
      }
      const template: Omit<OutgoingMessage, 'payload'> = {
        key: flags.key,
        headers: flags.header,
        priority: flags.priority,
        subject: flags.subject,
      };

      if (flags.delay !== undefined && flags.notBefore !== undefined) {
        throw new MailbusError(
          ERROR_CODES.INVALID_OPTION,
          'give --delay or --not-before, not both',
        );
      }
      const schedule = { delayMs: flags.delay, notBefore: flags.notBefore };

      // Parse the payload before connecting: bad input fails fast and touches nothing.
      const single = flags.lines
        ? undefined
        : parseJson(
            json ?? (await readStdin()),
            json === undefined ? 'stdin' : 'the JSON argument',
          );

      const bus = await connect(connectOptions(flags));
      try {
        if (!flags.lines) {
          const id = await bus.publish(topic, single, { ...template, ...schedule, id: flags.id });
          process.stdout.write(`${id}\n`);
          return;
        }
        let batch: OutgoingMessage[] = [];
        let lineNumber = 0;
        const flush = async (): Promise<void> => {
          if (batch.length > 0) {
            const ids = await bus.publishBatch(topic, batch, schedule);
            process.stdout.write(ids.map((id) => `${id}\n`).join(''));
            batch = [];
          }
        };
        for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
          lineNumber += 1;
          if (line.trim() === '') {
            continue;
          }
          batch.push({ ...template, payload: parseJson(line, `line ${lineNumber}`) });
          if (batch.length >= flags.batch) {
            await flush();
          }
        }
        await flush();
      } finally {
        await bus.close();
      }
    },
  );
}
