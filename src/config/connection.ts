// Connection strings: where the queue lives (`maildir:PATH`, `imap://`, `imaps://`) and where
// publishes are submitted (`smtp://`, `smtps://`). Secrets may come from the URL, the environment
// or a file; whatever their source, only `redact()`ed forms of a URL are ever printed.

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ERROR_CODES, MailbusError, errorText } from '../errors.js';

/** The store used when no URL is given: a Maildir in the working directory. */
export const DEFAULT_MAILDIR = './mailbus-data';

export interface TlsOptions {
  /** PEM of a private CA to trust besides the system's. */
  ca?: string;
  /** false turns certificate verification off; only ever set by an explicit option. */
  rejectUnauthorized: boolean;
}

export interface MaildirConfig {
  kind: 'maildir';
  path: string;
  /** fsync each message file and directory before a publish resolves (the default). */
  fsync: boolean;
}

export interface ImapConfig {
  kind: 'imap';
  host: string;
  port: number;
  /** Implicit TLS (imaps://); plain imap:// upgrades with STARTTLS whenever the server offers it. */
  secure: boolean;
  user: string;
  password: string;
  tls: TlsOptions;
}

export type StoreConfig = MaildirConfig | ImapConfig;

export interface SmtpConfig {
  host: string;
  port: number;
  secure: boolean;
  user?: string;
  password?: string;
  tls: TlsOptions;
}

/** Where secrets and TLS settings may come from besides the URL. */
export interface SecretSources {
  /** A password given directly (for example from MAILBUS_PASSWORD). */
  password?: string;
  /** A file whose first line is the password (for example from MAILBUS_PASSWORD_FILE). */
  passwordFile?: string;
  /** A PEM file of a CA to trust. */
  tlsCaFile?: string;
  /** Turns certificate verification off. */
  insecureTls?: boolean;
  /** Relaxes Maildir durability: no fsync before a publish resolves. */
  noFsync?: boolean;
}

function invalid(message: string): MailbusError {
  return new MailbusError(ERROR_CODES.INVALID_OPTION, message);
}

/** The URL with any password replaced, for logs and messages. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) {
      parsed.password = '***';
    }
    return parsed.toString();
  } catch {
    return url.replace(/\/\/([^:/@]+):[^@/]*@/, '//$1:***@');
  }
}

function readSecretFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8').split(/\r?\n/)[0] ?? '';
  } catch (err) {
    throw invalid(`cannot read the ${what} file ${path}: ${errorText(err)}`);
  }
}

function tlsFrom(sources: SecretSources): TlsOptions {
  let ca: string | undefined;
  if (sources.tlsCaFile) {
    try {
      ca = readFileSync(sources.tlsCaFile, 'utf8');
    } catch (err) {
      throw invalid(`cannot read the TLS CA file ${sources.tlsCaFile}: ${errorText(err)}`);
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) {
      throw invalid(`the TLS CA file ${sources.tlsCaFile} holds no PEM certificate`);
    }
  }
  return { ca, rejectUnauthorized: !sources.insecureTls };
}

/** Decodes a %-escaped URL part; a bad escape is a clear error that does not show the part. */
function decodePart(part: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw invalid(`the ${what} in the URL has a bad %-escape: write % itself as %25`);
  }
}

function passwordFrom(parsed: URL, sources: SecretSources): string | undefined {
  if (parsed.password) {
    return decodePart(parsed.password, 'password');
  }
  if (sources.password) {
    return sources.password;
  }
  if (sources.passwordFile) {
    return readSecretFile(sources.passwordFile, 'password');
  }
  return undefined;
}

function portOf(parsed: URL, fallback: number, url: string): number {
  if (!parsed.port) {
    return fallback;
  }
  const port = Number(parsed.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalid(`bad port in ${redact(url)}`);
  }
  return port;
}

function parseUrl(url: string): URL {
  try {
    return new URL(url);
  } catch {
    throw invalid(`"${redact(url)}" is not a valid URL`);
  }
}

/** Reads a store URL; no URL at all means the default Maildir. */
export function parseStoreUrl(url: string | undefined, sources: SecretSources = {}): StoreConfig {
  if (url === undefined || url === '') {
    return { kind: 'maildir', path: resolve(DEFAULT_MAILDIR), fsync: !sources.noFsync };
  }
  if (url.startsWith('maildir:')) {
    const path = url.slice('maildir:'.length).replace(/^\/\/(?=\/)/, '');
    if (path === '') {
      throw invalid('maildir: URL needs a path, as in maildir:./mailbus-data');
    }
    return { kind: 'maildir', path: resolve(path), fsync: !sources.noFsync };
  }

  const parsed = parseUrl(url);
  if (parsed.protocol !== 'imap:' && parsed.protocol !== 'imaps:') {
    throw invalid(
      `unsupported store URL scheme "${parsed.protocol}" in ${redact(url)}: ` +
        'use maildir:PATH, imap://user@host:port or imaps://user@host:port',
    );
  }
  const secure = parsed.protocol === 'imaps:';
  const user = decodePart(parsed.username, 'user name');
  if (!user) {
    throw invalid(`${redact(url)} names no user: use imap://user@host:port`);
  }
  const password = passwordFrom(parsed, sources);
  if (password === undefined) {
    throw invalid(
      `no password for ${user} at ${parsed.hostname}: put it in the URL, MAILBUS_PASSWORD ` +
        'or a file named by MAILBUS_PASSWORD_FILE',
    );
  }
  return {
    kind: 'imap',
    host: parsed.hostname,
    port: portOf(parsed, secure ? 993 : 143, url),
    secure,
    user,
    password,
    tls: tlsFrom(sources),
  };
}

/** Reads an SMTP submission URL (smtp:// with STARTTLS when offered, or smtps://). */
export function parseSmtpUrl(url: string, sources: SecretSources = {}): SmtpConfig {
  const parsed = parseUrl(url);
  if (parsed.protocol !== 'smtp:' && parsed.protocol !== 'smtps:') {
    throw invalid(
      `unsupported SMTP URL scheme "${parsed.protocol}" in ${redact(url)}: ` +
        'use smtp://host:port or smtps://host:port',
    );
  }
  const secure = parsed.protocol === 'smtps:';
  const user = decodePart(parsed.username, 'user name') || undefined;
  return {
    host: parsed.hostname,
    port: portOf(parsed, secure ? 465 : 587, url),
    secure,
    user,
    password: user ? passwordFrom(parsed, sources) : undefined,
    tls: tlsFrom(sources),
  };
}
