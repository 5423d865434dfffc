// The store conformance suite again, on an account whose mail Dovecot stores as sdbox: the
// format docs/servers.md advises for queues, and the one the benchmark runs on. The rest of the
// IMAP tests use the harness's maildir account.

import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { beforeAll } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { ImapStore } from '../../src/store/imap/imap-store.js';
import { addUser } from '../servers/mail-servers.js';
import { imapConfig, mailServers } from '../support/imap.js';
import { describeStoreConformance } from '../support/store-conformance.js';

const user = `sdbox-${randomBytes(3).toString('hex')}`;
const password = randomBytes(12).toString('hex');

beforeAll(async () => {
  const info = mailServers();
  await addUser(info, user, password, path.join(path.dirname(info.maildir), user), 'sdbox');
});

describeStoreConformance('imap on sdbox', () =>
  ImapStore.open(imapConfig({ user, password }), { logger: silentLogger }),
);
