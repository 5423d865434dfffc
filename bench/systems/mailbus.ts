// mailbus through its public API only (connect, publish, publishBatch, consume, stats), in the
// four setups the benchmark compares: a Maildir with and without fsync, an IMAP account on
// Dovecot, and publishing through Postfix into that account.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ImapFlow } from 'imapflow';
import { connect } from '../../src/index.js';
import type { ConnectOptions, Mailbus, Worker } from '../../src/index.js';
import type { SystemId } from '../options.js';
import type { Payload } from '../payload.js';
import type {
  BenchHandler,
  ConsumeSettings,
  Endpoints,
  QueueSystem,
  RunningConsumer,
} from './system.js';
import { Unreachable, reason } from './system.js';

const GROUP = 'default';

/** Most warnings kept per system: a broken setup warns on every claim. */
const MAX_WARNINGS_KEPT = 20;

function connectOptions(id: SystemId, endpoints: Endpoints): ConnectOptions {
  if (id === 'mailbus/maildir-durable' || id === 'mailbus/maildir-relaxed') {
    return {
      url: `maildir:${endpoints.maildirRoot}`,
      noFsync: id === 'mailbus/maildir-relaxed',
    };
  }
  const mail = endpoints.mail;
  if (!mail) {
    throw new Unreachable('the private Dovecot and Postfix did not start');
  }
  const imap: ConnectOptions = {
    url: `imap://${mail.user}@${mail.host}:${mail.imapPort}`,
    password: mail.password,
    tlsCaFile: mail.caFile,
  };
  return id === 'mailbus/smtp'
    ? {
        ...imap,
        smtpUrl: `smtp://${mail.host}:${mail.smtpPort}`,
        address: `${mail.user}@${mail.domain}`,
      }
    : imap;
}

function describe(id: SystemId, endpoints: Endpoints): { durability: string; storage: string } {
  const mail = endpoints.mail;
  switch (id) {
    case 'mailbus/maildir-durable':
      return {
        durability:
          'publish resolves after fsync of the message file and its directories; ' +
          'each ack batch fsyncs the archive and in-progress directories',
        storage: `${endpoints.maildirStorage}: ${endpoints.maildirRoot}`,
      };
    case 'mailbus/maildir-relaxed':
      return {
        durability:
          'noFsync: publish resolves once the files are written, before they reach the disk',
        storage: `${endpoints.maildirStorage}: ${endpoints.maildirRoot}`,
      };
    case 'mailbus/imap':
      return {
        durability:
          'publish resolves when Dovecot completed APPEND and COPY (Dovecot fsyncs saved mail, ' +
          'mail_fsync=optimized)',
        storage: `Dovecot ${mail?.format ?? '?'} on ${mail?.storage ?? '?'}`,
      };
    default:
      return {
        durability:
          'publish resolves when Postfix accepted the message (its queue file fsynced); ' +
          'delivery to Dovecot by LMTP follows asynchronously',
        storage:
          `Postfix queue on ${mail?.postfixStorage ?? '?'}, ` +
          `Dovecot ${mail?.format ?? '?'} on ${mail?.storage ?? '?'}`,
      };
  }
}

class MailbusSystem implements QueueSystem {
  readonly warnings: string[] = [];
  readonly durability: string;
  readonly storage: string;
  readonly fillNote: string | undefined;

  constructor(
    readonly id: SystemId,
    private readonly bus: Mailbus,
    private readonly endpoints: Endpoints,
  ) {
    ({ durability: this.durability, storage: this.storage } = describe(id, endpoints));
    this.fillNote =
      id === 'mailbus/maildir-durable'
        ? 'large backlog written without fsync (the files are the same); consumed with fsync'
        : undefined;
  }

  async prepare(topic: string): Promise<void> {
    await this.bus.subscribe(topic, GROUP);
  }

  async publish(topic: string, payload: Payload): Promise<void> {
    await this.bus.publish(topic, payload);
  }

  async publishBatch(topic: string, payloads: Payload[]): Promise<void> {
    await this.bus.publishBatch(
      topic,
      payloads.map((payload) => ({ payload })),
    );
  }

  async fillBacklog(topic: string, payloads: Payload[]): Promise<void> {
    if (this.id !== 'mailbus/maildir-durable') {
      await this.publishBatch(topic, payloads);
      return;
    }
    const relaxed = await connect({ url: `maildir:${this.endpoints.maildirRoot}`, noFsync: true });
    try {
      await relaxed.publishBatch(
        topic,
        payloads.map((payload) => ({ payload })),
      );
    } finally {
      await relaxed.close();
    }
  }

  async waiting(topic: string): Promise<number> {
    const stats = await this.bus.stats(topic);
    return stats.find((entry) => entry.group === GROUP)?.waiting ?? 0;
  }

  async consume(
    topic: string,
    handler: BenchHandler,
    settings: ConsumeSettings,
  ): Promise<RunningConsumer> {
    const worker: Worker = this.bus.consume(topic, (message) => handler(message.payload), {
      group: GROUP,
      concurrency: settings.concurrency,
    });
    worker.on('warning', (err) => {
      if (this.warnings.length < MAX_WARNINGS_KEPT) {
        this.warnings.push(`worker: ${reason(err)}`);
      }
    });
    worker.done.catch((err: unknown) => {
      this.warnings.push(`worker stopped: ${reason(err)}`);
    });
    return {
      stop: async () => {
        await worker.close();
      },
    };
  }

  async remove(topic: string): Promise<void> {
    if (this.id === 'mailbus/maildir-durable' || this.id === 'mailbus/maildir-relaxed') {
      removeMaildirTopic(this.endpoints.maildirRoot, topic);
      return;
    }
    await removeImapTopic(this.endpoints, topic);
  }

  async close(): Promise<void> {
    await this.bus.close();
  }
}

/** Removes a topic's folder and every folder below it (groups, archive, in-progress). */
function removeMaildirTopic(root: string, topic: string): void {
  for (const entry of fs.readdirSync(root)) {
    if (entry === `.${topic}` || entry.startsWith(`.${topic}.`)) {
      fs.rmSync(path.join(root, entry), { recursive: true, force: true });
    }
  }
}

/** Deletes a topic's mailboxes through IMAP (never behind Dovecot's back), children first. */
async function removeImapTopic(endpoints: Endpoints, topic: string): Promise<void> {
  const mail = endpoints.mail;
  if (!mail) {
    return;
  }
  const client = new ImapFlow({
    host: mail.host,
    port: mail.imapPort,
    secure: false,
    auth: { user: mail.user, pass: mail.password },
    tls: { ca: fs.readFileSync(mail.caFile, 'utf8') },
    logger: false,
  });
  await client.connect();
  try {
    const mailboxes = (await client.list())
      .map((mailbox) => mailbox.path)
      .filter((name) => name === topic || name.startsWith(`${topic}.`))
      .sort((a, b) => b.length - a.length);
    for (const mailbox of mailboxes) {
      await client.mailboxDelete(mailbox);
    }
  } finally {
    await client.logout();
  }
}

export async function openMailbus(id: SystemId, endpoints: Endpoints): Promise<QueueSystem> {
  const options = connectOptions(id, endpoints);
  let bus: Mailbus;
  try {
    bus = await connect(options);
  } catch (err) {
    throw new Unreachable(`mailbus connect failed: ${reason(err)}`);
  }
  return new MailbusSystem(id, bus, endpoints);
}
