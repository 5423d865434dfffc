#!/usr/bin/env node
// The mailbus command line: a thin layer over the library. Every user error ends as one line on
// stderr and a non-zero exit; a stack trace is printed only for a bug, and only when asked.

import { Command, CommanderError } from 'commander';
import { MailbusError } from '../errors.js';
import { registerConsume } from './commands/consume.js';
import { registerDashboard } from './commands/dashboard.js';
import { registerDemo } from './commands/demo.js';
import { registerDlq } from './commands/dlq.js';
import { registerPeek } from './commands/peek.js';
import { registerPublish } from './commands/publish.js';
import { registerQuarantine } from './commands/quarantine.js';
import { registerStats } from './commands/stats.js';
import { registerSubscribe } from './commands/subscribe.js';
import { registerTail } from './commands/tail.js';

/** Exit status for a failed command; commander's own usage errors exit with 2 elsewhere too. */
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

function program(): Command {
  const root = new Command('mailbus')
    .description('A message queue whose broker is email: Maildir, IMAP and SMTP.')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({
      writeErr: (text) => process.stderr.write(text),
      // Usage errors, like every other error, are one line that starts with the program's name.
      outputError: (text, write) => {
        const line = text.replace(/^error: /, '').trim();
        write(`mailbus: ${line} (see mailbus --help)\n`);
      },
    })
    .addHelpText(
      'after',
      `
Environment:
  MAILBUS_URL            the queue (default maildir:./mailbus-data)
  MAILBUS_SMTP_URL       publish through this SMTP server
  MAILBUS_PASSWORD       the IMAP/SMTP password, unless the URL has one
  MAILBUS_PASSWORD_FILE  a file whose first line is the password
  MAILBUS_TLS_CA         a CA certificate (PEM) to trust
  MAILBUS_ADDRESS        the queue account address, for SMTP
  MAILBUS_SIGNING_KEY    publish: sign messages with KEY-ID:SECRET
  MAILBUS_VERIFY_KEYS    consume --verify, quarantine: KEY-ID:SECRET,KEY-ID:SECRET
  MAILBUS_LOG_LEVEL      debug, info, warn or error: JSON log lines on stderr
  MAILBUS_DASHBOARD_TOKEN  the dashboard's access token`,
    );
  registerPublish(root);
  registerConsume(root);
  registerSubscribe(root);
  registerStats(root);
  registerDlq(root);
  registerQuarantine(root);
  registerPeek(root);
  registerTail(root);
  registerDashboard(root);
  registerDemo(root);
  for (const command of root.commands) {
    command.exitOverride();
  }
  return root;
}

async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version end here too, with exit code 0.
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (err instanceof MailbusError) {
      process.stderr.write(`mailbus: ${err.message}\n`);
      return EXIT_FAILURE;
    }
    const text = err instanceof Error ? err.message : String(err);
    process.stderr.write(`mailbus: unexpected error: ${text}\n`);
    if (process.env.MAILBUS_LOG_LEVEL === 'debug' && err instanceof Error) {
      process.stderr.write(`${err.stack}\n`);
    }
    return EXIT_FAILURE;
  }
}

// Exit explicitly: a stray handle (a pooled connection, a timer) must not keep a finished command
// alive. Writes to pipes and files are synchronous on Linux, so nothing printed is lost.
process.exit(await main(process.argv));
