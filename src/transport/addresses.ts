// The email addresses of a queue: the account's own, each topic's and each group's. Postfix
// hands `local+detail@domain` to Dovecot LMTP, which with lmtp_save_to_detail_mailbox stores it
// in the mailbox the detail names: so a topic or group address delivers straight into the
// topic's or group's mailbox.

import { ERROR_CODES, MailbusError } from '../errors.js';
import { checkName } from '../names.js';

/** Separates the account's local part from the detail (Postfix's recipient_delimiter). */
export const DETAIL_SEPARATOR = '+';

/**
 * Separates topic and group inside a detail. It is the Maildir++ hierarchy delimiter, so the
 * detail `orders.default` is the mailbox of group "default" of topic "orders"; a server whose
 * delimiter is "/" would need a different mapping on its side.
 */
export const DETAIL_DELIMITER = '.';

/** How much of a bad address an error message repeats. */
const ADDRESS_PREVIEW_LENGTH = 320;

// A plain addr-spec local part and domain: no quoting, no comments, no spaces.
const LOCAL_PART = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$/;
const DOMAIN = /^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/;

export interface QueueAddress {
  local: string;
  domain: string;
}

/** Splits and checks the queue account's address, such as `mailbus@queue.test`. */
export function parseQueueAddress(address: string): QueueAddress {
  const at = address.lastIndexOf('@');
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (at < 1 || !LOCAL_PART.test(local) || !DOMAIN.test(domain)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `"${printable(address)}" is not a plain email address: give the queue account's ` +
        'address as local@domain, for example mailbus@example.org',
    );
  }
  if (local.includes(DETAIL_SEPARATOR)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `the queue address "${address}" already has a "${DETAIL_SEPARATOR}detail": give the ` +
        "account's own address; mailbus adds the topic and group as the detail",
    );
  }
  return { local, domain };
}

/** Where mail for a topic goes: `local+topic@domain`, delivered to the topic's mailbox. */
export function topicAddress(address: string, topic: string): string {
  const { local, domain } = parseQueueAddress(address);
  return `${local}${DETAIL_SEPARATOR}${checkName('topic', topic)}@${domain}`;
}

/** Where mail for one group goes: `local+topic.group@domain`, its waiting mailbox. */
export function groupAddress(address: string, topic: string, group: string): string {
  const { local, domain } = parseQueueAddress(address);
  const detail = checkName('topic', topic) + DETAIL_DELIMITER + checkName('group', group);
  return `${local}${DETAIL_SEPARATOR}${detail}@${domain}`;
}

// Keep error messages on one line whatever the caller passed.
function printable(text: string): string {
  const chars = [...text.slice(0, ADDRESS_PREVIEW_LENGTH)];
  return chars.map((char) => (char < ' ' || char === '\x7f' ? '?' : char)).join('');
}
