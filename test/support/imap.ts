// Connection details of the test Dovecot and Postfix, for the library and the command line.

import { readFileSync } from 'node:fs';
import { ImapFlow } from 'imapflow';
import { inject } from 'vitest';
import type { ImapConfig } from '../../src/config/connection.js';
import type { ConnectOptions } from '../../src/index.js';

export function mailServers() {
  return inject('mailServers');
}

/** The queue account's IMAP URL, without the password (which goes in MAILBUS_PASSWORD). */
export function imapUrl(): string {
  const info = mailServers();
  return `imap://${info.user}@${info.host}:${info.imapPort}`;
}

export function smtpUrl(): string {
  const info = mailServers();
  return `smtp://${info.host}:${info.smtpPort}`;
}

export function queueAddress(): string {
  const info = mailServers();
  return `${info.user}@${info.domain}`;
}

/** The queue account as the IMAP store's own configuration, for tests below the library. */
export function imapConfig(overrides: Partial<ImapConfig> = {}): ImapConfig {
  const info = mailServers();
  return {
    kind: 'imap',
    host: info.host,
    port: info.imapPort,
    secure: false,
    user: info.user,
    password: info.password,
    tls: { ca: readFileSync(info.caFile, 'utf8'), rejectUnauthorized: true },
    ...overrides,
  };
}

/** Library options for the queue account over IMAP, optionally publishing through Postfix. */
export function imapOptions(withSmtp = false): ConnectOptions {
  const info = mailServers();
  return {
    url: imapUrl(),
    password: info.password,
    tlsCaFile: info.caFile,
    smtpUrl: withSmtp ? smtpUrl() : undefined,
    address: queueAddress(),
  };
}

/** The same as environment variables for the command line. */
export function imapEnv(withSmtp = false): NodeJS.ProcessEnv {
  const info = mailServers();
  return {
    MAILBUS_URL: imapUrl(),
    MAILBUS_PASSWORD: info.password,
    MAILBUS_TLS_CA: info.caFile,
    MAILBUS_ADDRESS: queueAddress(),
    ...(withSmtp ? { MAILBUS_SMTP_URL: smtpUrl() } : {}),
  };
}

/**
 * A plain imapflow session on the queue account (or another one), to look at or plant mail
 * behind mailbus.
 */
export async function imapSession(
  account: { user: string; password: string } = mailServers(),
): Promise<ImapFlow> {
  const info = mailServers();
  const client = new ImapFlow({
    host: info.host,
    port: info.imapPort,
    secure: false,
    auth: { user: account.user, pass: account.password },
    tls: { ca: readFileSync(info.caFile, 'utf8') },
    logger: false,
  });
  await client.connect();
  return client;
}
