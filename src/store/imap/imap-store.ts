// The IMAP store: a queue in the mailboxes of one IMAP account, any server with CONDSTORE,
// MOVE and UIDPLUS (Dovecot 2.3 is the one it is tested against).
//
// How the queue maps onto IMAP, and why:
//
// - Mailbox names come from Layout with the server's own hierarchy delimiter ("." on Dovecot's
//   maildir), so the same queue looks the same in a Maildir and in a mail client.
// - A topic is a mailbox holding a copy of every published message; each group is a child
//   mailbox holding the copies still waiting, with Archive, Junk and one In-Progress child per
//   consumer below it. A group receives what is published after it was created, like a
//   mailing-list subscriber, so append() reads the groups with LIST on every call.
// - append() APPENDs each message to the topic mailbox once (\Flagged for high priority; many
//   in one MULTIAPPEND when the server can), learns the UIDs from APPENDUID and gives each group
//   its copy with one server-side UID COPY (Dovecot hard-links on maildir): one upload however
//   many groups there are. Without UIDPLUS it APPENDs to every group instead. It resolves once
//   every group has its copy. publish.ts has the details.
// - A claim must be exclusive, and on Dovecot UID MOVE is not (two sessions moving the same
//   message both succeed). The exclusive step is a conditional STORE of a claim keyword
//   (UNCHANGEDSINCE, RFC 7162); only its winner moves the message into its in-progress mailbox.
//   claim.ts has the details.
// - A claimer holds two connections, one with the group mailbox selected, IDLEing on it to hear
//   of new mail, and one with its in-progress mailbox selected to settle claims: IMAP acts on
//   the selected mailbox, and re-selecting between every claim and every ack would double the
//   round trips.
// - ack() flags \Seen and moves to Archive, release() moves back (or appends a rewritten copy
//   first and then removes the held one), deadLetter() appends the report to Junk: each in as
//   few commands as IMAP allows, and always copy before remove, so a crash duplicates and never
//   loses.
// - Each connection runs one task at a time; a dropped connection is reopened by the next call
//   after a bounded backoff (connection.ts), and the call that saw the drop fails with
//   ECONNECTION, which a worker retries.

import type { ImapFlow } from 'imapflow';
import type { ImapConfig } from '../../config/connection.js';
import { ERROR_CODES, MailbusError, errorText } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ComposedMessage } from '../../message/compose.js';
import { checkName } from '../../names.js';
import { DEFAULT_GROUP, Layout } from '../layout.js';
import type { Claimer, ClaimerOptions, GroupStats, Store } from '../store.js';
import { ImapClaimer } from './claimer.js';
import { listMailboxes } from './commands.js';
import { ImapConnection, REQUIRED_CAPABILITIES } from './connection.js';
import { publishToTopic } from './publish.js';

/** The hierarchy delimiter assumed when the server names none (Maildir++ and Dovecot's). */
const DEFAULT_DELIMITER = '.';

// LIST flags of names that are not mailboxes of their own (a parent that only has children).
const NOT_A_MAILBOX = ['\\noselect', '\\nonexistent'];

export interface ImapStoreOptions {
  logger: Logger;
}

export class ImapStore implements Store {
  readonly kind = 'imap';
  readonly location: string;

  private readonly claimers = new Set<ImapClaimer>();
  // Topics this store has created or seen, so append() creates a topic at most once.
  private readonly knownTopics = new Set<string>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly config: ImapConfig,
    private readonly connection: ImapConnection,
    private readonly layout: Layout,
    private readonly log: Logger,
  ) {
    const scheme = config.secure ? 'imaps' : 'imap';
    this.location = `${scheme}://${encodeURIComponent(config.user)}@${config.host}:${config.port}`;
  }

  /** Connects and logs in; fails with EAUTH, ECONNECTION or, lacking an extension, EPROTOCOL. */
  static async open(config: ImapConfig, options: ImapStoreOptions): Promise<ImapStore> {
    const log = options.logger.child({ sub: 'imap-store' });
    const connection = new ImapConnection(config, {
      role: 'store',
      logger: options.logger,
      capabilities: REQUIRED_CAPABILITIES.store,
    });
    try {
      const delimiter = await connection.run(
        { command: 'LIST' },
        async (client) => (await listMailboxes(client, ''))[0]?.delimiter,
      );
      return new ImapStore(config, connection, new Layout(delimiter ?? DEFAULT_DELIMITER), log);
    } catch (err) {
      await connection.close();
      throw err;
    }
  }

  async ensureTopic(topic: string): Promise<void> {
    await this.createMailboxes([
      this.layout.topic(topic),
      ...this.groupMailboxes(topic, DEFAULT_GROUP),
    ]);
    this.knownTopics.add(topic);
  }

  async subscribe(topic: string, group: string): Promise<void> {
    await this.createMailboxes([this.layout.topic(topic), ...this.groupMailboxes(topic, group)]);
  }

  async listTopics(): Promise<string[]> {
    const listed = await this.connection.run({ command: 'LIST' }, (client) =>
      selectable(client, '%'),
    );
    const topics = listed.flatMap((path) => {
      const role = this.layout.parse(path);
      return role?.role === 'topic' ? [role.topic] : [];
    });
    return topics.sort();
  }

  async listGroups(topic: string): Promise<string[]> {
    const pattern = this.layout.topic(topic) + this.layout.delimiter + '%';
    const listed = await this.connection.run({ command: 'LIST' }, (client) =>
      selectable(client, pattern),
    );
    return this.groupsOf(topic, listed).sort();
  }

  async append(topic: string, messages: ComposedMessage[]): Promise<void> {
    const topicMailbox = this.layout.topic(topic);
    if (messages.length === 0) {
      return;
    }
    if (!this.knownTopics.has(topic)) {
      await this.ensureTopic(topic);
    }

    await this.connection.run(
      { command: 'APPEND', mailbox: topicMailbox },
      async (client) => {
        // Read on every call: a group subscribed a moment ago must get the next message.
        const pattern = topicMailbox + this.layout.delimiter + '%';
        const groups = this.groupsOf(topic, await selectable(client, pattern)).map((group) =>
          this.layout.group(topic, group),
        );

        await publishToTopic(client, topicMailbox, groups, messages);
      },
      topicMailbox,
    );
  }

  /** A claimer for the group; the topic and the group are created if they do not exist. */
  async claimer(topic: string, group: string, options: ClaimerOptions): Promise<Claimer> {
    this.checkOpen();
    await this.ensureTopic(topic);
    if (group !== DEFAULT_GROUP) {
      await this.subscribe(topic, group);
    }
    const claimer = await ImapClaimer.open({
      config: this.config,
      layout: this.layout,
      topic,
      group,
      consumer: options.consumer,
      logger: this.log,
      onClose: (closed) => this.claimers.delete(closed),
    });
    this.claimers.add(claimer);
    return claimer;
  }

  async stats(topic?: string): Promise<GroupStats[]> {
    if (topic !== undefined) {
      checkName('topic', topic);
    }
    const listed = await this.connection.run({ command: 'LIST' }, (client) =>
      client.list({ statusQuery: { messages: true } }),
    );

    const groups = new Map<string, GroupStats>();
    const entry = (t: string, g: string): GroupStats => {
      const key = `${t}\u0000${g}`;
      let stats = groups.get(key);
      if (!stats) {
        stats = { topic: t, group: g, waiting: 0, inFlight: 0, handled: 0, dead: 0 };
        groups.set(key, stats);
      }
      return stats;
    };
    for (const mailbox of listed) {
      const role = this.layout.parse(mailbox.path);
      const count = mailbox.status?.messages ?? 0;
      if (!role || role.role === 'topic' || (topic !== undefined && role.topic !== topic)) {
        continue;
      }
      const stats = entry(role.topic, role.group);
      if (role.role === 'group') {
        stats.waiting += count;
      } else if (role.role === 'in-progress') {
        stats.inFlight += role.consumer === undefined ? 0 : count;
      } else if (role.role === 'archive') {
        stats.handled += count;
      } else {
        stats.dead += count;
      }
    }
    return [...groups.values()].sort(
      (a, b) => a.topic.localeCompare(b.topic) || a.group.localeCompare(b.group),
    );
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const claimer of [...this.claimers]) {
      try {
        await claimer.close();
      } catch (err) {
        this.log.debug({ err: errorText(err) }, 'closing a claimer failed');
      }
    }
    await this.connection.close();
  }

  private groupMailboxes(topic: string, group: string): string[] {
    return [
      this.layout.group(topic, group),
      this.layout.archive(topic, group),
      this.layout.junk(topic, group),
    ];
  }

  private async createMailboxes(mailboxes: string[]): Promise<void> {
    await this.connection.run({ command: 'CREATE' }, async (client) => {
      // mailboxCreate resolves with created: false when the mailbox exists (ALREADYEXISTS).
      for (const mailbox of mailboxes) {
        await client.mailboxCreate(mailbox);
      }
    });
  }

  private groupsOf(topic: string, mailboxes: string[]): string[] {
    return mailboxes.flatMap((path) => {
      const role = this.layout.parse(path);
      return role?.role === 'group' && role.topic === topic ? [role.group] : [];
    });
  }

  private checkOpen(): void {
    if (this.closing) {
      throw new MailbusError(ERROR_CODES.CLOSED, `the IMAP store at ${this.location} is closed`);
    }
  }
}

/** The mailboxes that match `pattern` and can hold messages. */
async function selectable(client: ImapFlow, pattern: string): Promise<string[]> {
  const listed = await listMailboxes(client, pattern);
  return listed
    .filter(
      (mailbox) => ![...mailbox.flags].some((flag) => NOT_A_MAILBOX.includes(flag.toLowerCase())),
    )
    .map((mailbox) => mailbox.path);
}
