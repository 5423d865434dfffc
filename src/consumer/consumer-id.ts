// Consumer ids name a consumer's in-progress mailbox, so they follow the group-name grammar.

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { NAME_MAX_LENGTH, checkName } from '../names.js';

/** `<host>-<pid>-<random>`: readable in a mail client, unique across machines and restarts. */
export function newConsumerId(): string {
  const host =
    hostname()
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 32) || 'host';
  const id = `${host}-${process.pid}-${randomBytes(3).toString('hex')}`;
  return checkName('group', id.slice(0, NAME_MAX_LENGTH));
}
