import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { MaildirStore } from '../../src/store/maildir/maildir-store.js';
import { describeStoreConformance } from '../support/store-conformance.js';

const root = mkdtempSync(join(tmpdir(), 'mailbus-maildir-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describeStoreConformance('maildir', () =>
  MaildirStore.open(
    { kind: 'maildir', path: join(root, 'queue'), fsync: true },
    {
      logger: silentLogger,
    },
  ),
);
