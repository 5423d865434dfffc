// `mailbus tail TOPIC [--group G]`: follows the messages that arrive in a group, one JSON line
// each, as `kcat -C` follows a Kafka topic, until interrupted. It claims nothing: it searches
// the group for messages stored since it last looked, in whatever state they are by then.

import type { Command } from 'commander';
import { viewMessage } from '../../admin/messages.js';
import { connect } from '../../client.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions, parseDurationMs } from '../options.js';
import { viewLine } from './peek.js';

interface TailFlags extends GlobalFlags {
  group: string;
  /** Milliseconds; the default is applied where it is used, so that --help shows it once. */
  interval?: number;
  fromStart?: boolean;
}

/** How often tail looks for new messages by default. */
const TAIL_INTERVAL_MS = 500;

/** Looks this far back each time: a message may be stored a little before it can be seen. */
const TAIL_OVERLAP_MS = 5_000;

/** Messages read per search page; a look reads as many pages as there are new messages. */
const TAIL_PAGE = 500;

export function registerTail(program: Command): void {
  const command = program
    .command('tail')
    .description('follow the messages arriving in a group, as JSON lines, without claiming them')
    .argument('<topic>', 'topic name')
    .option('--group <group>', 'consumer group', 'default')
    .option(
      '--interval <duration>',
      'how often to look for new messages (500ms)',
      parseDurationMs('--interval'),
    )
    .option('--from-start', 'print the messages already there first')
    .addHelpText(
      'after',
      `
Examples:
  mailbus tail orders
  mailbus tail orders --group billing | jq .payload`,
    );
  addConnectionFlags(command).action(async (topic: string, flags: TailFlags) => {
    const bus = await connect(connectOptions(flags));
    const stopping = new AbortController();
    const stop = (): void => stopping.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    process.stdout.on('error', stop); // `tail | head` ends it

    // Ids seen within the overlap, so that a message looked at twice prints once.
    const seen = new Map<string, number>();
    const startedAt = Date.now();
    let sinceMs = flags.fromStart ? 0 : startedAt;
    try {
      while (!stopping.signal.aborted) {
        const lookedAt = Date.now();
        const since = new Date(sinceMs - TAIL_OVERLAP_MS);
        const hits = [];
        for (let offset = 0; ; offset += TAIL_PAGE) {
          const query = { topic, group: flags.group, since };
          const page = await bus.store.search(query, { offset, limit: TAIL_PAGE });
          hits.push(...page.hits);
          if (offset + TAIL_PAGE >= page.total) {
            break;
          }
        }
        for (const hit of hits.reverse()) {
          const view = await viewMessage(hit);
          if (seen.has(view.id)) {
            continue;
          }
          seen.set(view.id, hit.storedAt.getTime());
          // Without --from-start, what was there before tail started is not printed.
          if (flags.fromStart || hit.storedAt.getTime() >= startedAt) {
            process.stdout.write(`${viewLine(view)}\n`);
          }
        }

        sinceMs = lookedAt;
        for (const [id, storedAtMs] of seen) {
          if (storedAtMs < sinceMs - 2 * TAIL_OVERLAP_MS) {
            seen.delete(id);
          }
        }
        await sleep(flags.interval ?? TAIL_INTERVAL_MS, stopping.signal);
      }
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      await bus.close();
    }
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
