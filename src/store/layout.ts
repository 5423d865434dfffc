// Where the queue lives in a mail account: the mailbox of each topic and group, and the
// mailboxes a group's messages move through. Both stores use these names, so that a Maildir
// written by mailbus and the same queue on an IMAP server look alike in a mail client.
//
//   orders                               the topic's inbox: a copy of every published message
//   orders.default                       group "default": its waiting messages
//   orders.default.Scheduled             messages to hand out later (delays, retry backoff)
//   orders.default.In-Progress.<worker>  messages claimed by one consumer (its lease)
//   orders.default.Consumers             IMAP only: one heartbeat message per live consumer
//   orders.default.Turns                 IMAP only: which message holds each ordering key's turn
//   orders.default.Archive               handled messages, flagged \Seen
//   orders.default.Junk                  dead letters
//   orders.default.Quarantine            messages that failed verification, kept for an operator
//   orders.default.Paused                present while the group is paused: consumers claim nothing
//
// "." stands for the account's hierarchy delimiter: "." in Maildir++ (and Dovecot's default),
// often "/" on other IMAP servers.

import { checkName } from '../names.js';

/** The mailbox names below a group. Capitalised, so they never clash with a group name. */
export const GROUP_FOLDERS = {
  scheduled: 'Scheduled',
  inProgress: 'In-Progress',
  consumers: 'Consumers',
  turns: 'Turns',
  archive: 'Archive',
  junk: 'Junk',
  quarantine: 'Quarantine',
  paused: 'Paused',
} as const;

export const DEFAULT_GROUP = 'default';

export class Layout {
  constructor(readonly delimiter: string) {}

  topic(topic: string): string {
    return checkName('topic', topic);
  }

  group(topic: string, group: string): string {
    return this.join(checkName('topic', topic), checkName('group', group));
  }

  inProgress(topic: string, group: string, consumer?: string): string {
    const folder = this.join(this.group(topic, group), GROUP_FOLDERS.inProgress);
    return consumer === undefined ? folder : this.join(folder, consumer);
  }

  scheduled(topic: string, group: string): string {
    return this.join(this.group(topic, group), GROUP_FOLDERS.scheduled);
  }

  consumers(topic: string, group: string): string {
    return this.join(this.group(topic, group), GROUP_FOLDERS.consumers);
  }

  turns(topic: string, group: string): string {
    return this.join(this.group(topic, group), GROUP_FOLDERS.turns);
  }

  archive(topic: string, group: string): string {
    return this.join(this.group(topic, group), GROUP_FOLDERS.archive);
  }

  junk(topic: string, group: string): string {
    return this.join(this.group(topic, group), GROUP_FOLDERS.junk);
  }

  quarantine(topic: string, group: string): string {
    return this.join(this.group(topic, group), GROUP_FOLDERS.quarantine);
  }

  paused(topic: string, group: string): string {
    return this.join(this.group(topic, group), GROUP_FOLDERS.paused);
  }

  /**
   * Reads a mailbox name back: the topic and group it belongs to, and what it holds. Returns
   * undefined for mailboxes that are not part of a queue (INBOX, Sent, a person's folders).
   */
  parse(mailbox: string): MailboxRole | undefined {
    const parts = mailbox.split(this.delimiter);
    const [topic, group, folder, consumer] = parts;
    if (!topic || !isName('topic', topic)) {
      return undefined;
    }
    if (parts.length === 1) {
      return { role: 'topic', topic };
    }
    if (!group || !isName('group', group)) {
      return undefined;
    }
    if (parts.length === 2) {
      return { role: 'group', topic, group };
    }
    if (parts.length === 3 && folder === GROUP_FOLDERS.archive) {
      return { role: 'archive', topic, group };
    }
    if (parts.length === 3 && folder === GROUP_FOLDERS.junk) {
      return { role: 'junk', topic, group };
    }
    if (parts.length === 3 && folder === GROUP_FOLDERS.quarantine) {
      return { role: 'quarantine', topic, group };
    }
    if (parts.length === 3 && folder === GROUP_FOLDERS.scheduled) {
      return { role: 'scheduled', topic, group };
    }
    if (folder === GROUP_FOLDERS.inProgress && parts.length <= 4) {
      return { role: 'in-progress', topic, group, consumer };
    }
    return undefined;
  }

  private join(...parts: string[]): string {
    return parts.join(this.delimiter);
  }
}

export type MailboxRole =
  | { role: 'topic'; topic: string }
  | {
      role: 'group' | 'scheduled' | 'archive' | 'junk' | 'quarantine';
      topic: string;
      group: string;
    }
  | { role: 'in-progress'; topic: string; group: string; consumer?: string };

function isName(kind: 'topic' | 'group', name: string): boolean {
  try {
    checkName(kind, name);
    return true;
  } catch {
    return false;
  }
}
