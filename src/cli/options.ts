// Turns command-line flags and MAILBUS_* environment variables into library options. A flag
// wins over the environment, the environment over the default.

import { parseIsoTime } from '../time.js';
import type { Command } from 'commander';
import type { ConnectOptions, StartPoint } from '../client.js';
import { ERROR_CODES, MailbusError } from '../errors.js';
import { stderrLogger } from '../log.js';
import { readKeyFile } from '../security/signature.js';

/** The options every command that connects shares. */
export interface GlobalFlags {
  url?: string;
  smtpUrl?: string;
  address?: string;
  passwordFile?: string;
  tlsCa?: string;
  insecureTls?: boolean;
  fsync: boolean;
  logLevel?: string;
  /** publish: sign with the key in this file (KEY-ID:SECRET). */
  signingKeyFile?: string;
  /** consume, quarantine: the verification keys in this file, one KEY-ID:SECRET a line. */
  verifyKeysFile?: string;
}

export function addConnectionFlags(command: Command): Command {
  return command
    .option(
      '--url <url>',
      'the queue: maildir:PATH, imap://user@host:port, imaps://... (MAILBUS_URL)',
    )
    .option('--smtp-url <url>', 'publish through SMTP: smtp://host:port (MAILBUS_SMTP_URL)')
    .option('--address <address>', 'the queue account address, for SMTP (MAILBUS_ADDRESS)')
    .option('--password-file <file>', 'read the password from a file (MAILBUS_PASSWORD_FILE)')
    .option('--tls-ca <file>', 'trust this CA certificate (PEM) for TLS (MAILBUS_TLS_CA)')
    .option('--insecure-tls', 'DANGER: accept any TLS certificate, even a forged one')
    .option('--no-fsync', 'Maildir: do not fsync before a publish is reported done (faster)')
    .option('--log-level <level>', 'log JSON lines to stderr at this level (MAILBUS_LOG_LEVEL)');
}

const LOG_LEVELS = ['silent', 'error', 'warn', 'info', 'debug', 'trace'];

export function connectOptions(flags: GlobalFlags): ConnectOptions {
  const env = process.env;
  const logLevel = flags.logLevel ?? env.MAILBUS_LOG_LEVEL ?? 'silent';
  if (!LOG_LEVELS.includes(logLevel)) {
    throw invalid(`log level "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  }
  if (flags.insecureTls) {
    process.stderr.write('mailbus: warning: TLS certificates are not verified (--insecure-tls)\n');
  }
  return {
    url: flags.url ?? env.MAILBUS_URL,
    smtpUrl: flags.smtpUrl ?? env.MAILBUS_SMTP_URL,
    address: flags.address ?? env.MAILBUS_ADDRESS,
    password: env.MAILBUS_PASSWORD,
    passwordFile: flags.passwordFile ?? env.MAILBUS_PASSWORD_FILE,
    tlsCaFile: flags.tlsCa ?? env.MAILBUS_TLS_CA,
    insecureTls: flags.insecureTls ?? false,
    noFsync: !flags.fsync,
    signingKey: keyText(flags.signingKeyFile, 'MAILBUS_SIGNING_KEY', '--signing-key-file'),
    verifyKeys: keyText(flags.verifyKeysFile, 'MAILBUS_VERIFY_KEYS', '--verify-keys-file'),
    logger: stderrLogger(logLevel),
  };
}

/** Key text from a file (the flag wins) or the environment; undefined when neither has one. */
function keyText(file: string | undefined, variable: string, flag: string): string | undefined {
  if (file !== undefined) {
    return readKeyFile(file).trim() || emptyKeys(flag, file);
  }
  const value = process.env[variable]?.trim();
  return value ? value : undefined;
}

function emptyKeys(flag: string, file: string): never {
  throw invalid(`${flag} ${file} holds no key`);
}

function invalid(message: string): MailbusError {
  return new MailbusError(ERROR_CODES.INVALID_OPTION, message);
}

/** Reads a whole number of at least `min` from a flag. */
export function parseCount(name: string, min = 1): (value: string) => number {
  return (value: string) => {
    const number = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(number) || number < min) {
      throw invalid(`${name} must be a whole number of at least ${min}, not "${value}"`);
    }
    return number;
  };
}

/** Reads a TCP port: 0 (any free one) to 65535. */
export function parsePort(name: string): (value: string) => number {
  return (value: string) => {
    const number = Number(value);
    if (!/^\d+$/.test(value.trim()) || number > 65_535) {
      throw invalid(`${name} must be a port number from 0 to 65535, not "${value}"`);
    }
    return number;
  };
}

const DURATION_UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * Reads a duration such as 500ms, 30s, 5m, 2h or 7d; a bare number is seconds. Below `minMs`
 * (1 ms unless said otherwise) it is refused.
 */
export function parseDurationMs(name: string, minMs = 1): (value: string) => number {
  return (value: string) => {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value.trim());
    if (!match) {
      throw invalid(`${name} must be a duration such as 500ms, 30s, 5m or 2h, not "${value}"`);
    }
    const ms = Math.round(Number(match[1]) * (DURATION_UNITS_MS[match[2] ?? 's'] as number));
    if (ms < minMs) {
      throw invalid(`${name} must be at least ${minMs} ms, not "${value}"`);
    }
    return ms;
  };
}

/** Reads a retention: a duration, 0 (delete at once) or `forever`. */
export function parseRetention(name: string): (value: string) => number {
  const duration = parseDurationMs(name, 0);
  return (value: string) => (value.trim() === 'forever' ? Infinity : duration(value));
}

/** Reads a point in time as ISO 8601 (2026-12-24T18:00:00Z). */
export function parseTime(name: string): (value: string) => Date {
  return (value: string) => {
    const time = parseIsoTime(value.trim());
    if (time === undefined) {
      throw invalid(
        `${name} must be an ISO 8601 time such as 2026-12-24T18:00:00Z, not "${value}"`,
      );
    }
    return time;
  };
}

/** Reads where a new group starts: `now`, `earliest` or an ISO 8601 time. */
export function parseStart(name: string): (value: string) => StartPoint {
  return (value: string) => {
    const word = value.trim();
    if (word === 'now' || word === 'earliest') {
      return word;
    }
    const time = parseIsoTime(word);
    if (time === undefined) {
      throw invalid(
        `${name} must be now, earliest or an ISO 8601 time such as 2026-12-24T18:00:00Z, ` +
          `not "${value}"`,
      );
    }
    return time;
  };
}

/** Collects repeated `--header K=V` flags. */
export function collectHeader(value: string, previous: Record<string, string> = {}) {
  const at = value.indexOf('=');
  if (at <= 0) {
    throw invalid(`--header takes NAME=VALUE, not "${value}"`);
  }
  return { ...previous, [value.slice(0, at).trim()]: value.slice(at + 1) };
}
