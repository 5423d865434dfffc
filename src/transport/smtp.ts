// Publishing through SMTP: each message is submitted once, in one transaction addressed to the
// topic and to every group, and the mail server fans it out to their mailboxes like a mailing
// list. Resolves when the server has accepted every message for every recipient.
//
// Temporary trouble is retried here, so that a publish rides out a Postfix reload or restart: a
// 4xx reply (to the greeting, MAIL FROM, RCPT TO or the end of DATA) or a connection that fails
// sends the message again after a backoff, at most SMTP_SEND_MAX_ATTEMPTS times in all. A 5xx
// reply fails the publish at once, as do a refused login and a TLS failure, which no retry
// mends. When the server accepted some recipients and deferred others, only the deferred ones
// are tried again, so a group never gets the same message twice from one publish. One case can
// still duplicate: a connection that breaks after the message was sent but before the server's
// reply to it was read; the server may have taken it, and the retry sends it once more. That is
// the at-least-once promise of a publish, never a lost one.

import nodemailer from 'nodemailer';
import type { Transporter } from 'nodemailer';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import type { SmtpConfig } from '../config/connection.js';
import { ERROR_CODES, MailbusError, errorText, isMailbusError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ComposedMessage } from '../message/compose.js';
import { groupAddress, parseQueueAddress, topicAddress } from './addresses.js';

/** Connections in the pool: Postfix accepted about 420-470 messages/s over 4 of them here. */
export const SMTP_POOL_CONNECTIONS = 4;

/** Messages one pooled connection sends before it is replaced: bounds a server's session state. */
export const SMTP_POOL_MAX_MESSAGES = 1_000;

/** How long to wait for TCP and TLS, and then for the greeting: fail fast, as the IMAP side. */
export const SMTP_CONNECT_TIMEOUT_MS = 10_000;
export const SMTP_GREETING_TIMEOUT_MS = 10_000;

/** How long the server may stay silent in the middle of a transaction. */
export const SMTP_SOCKET_TIMEOUT_MS = 60_000;

/**
 * Tries of one message before its publish fails: the first and five retries. With the delays
 * below they wait 0.25 + 0.5 + 1 + 2 + 4 = 7.75 s in all, longer than a Postfix reload or
 * restart takes (0.1-3 s here), short enough that a publisher learns of an outage in seconds.
 */
export const SMTP_SEND_MAX_ATTEMPTS = 6;

/** Wait before the first retry of a message; it doubles with each further retry. */
export const SMTP_RETRY_FIRST_DELAY_MS = 250;

/** The longest wait between two tries of one message. */
export const SMTP_RETRY_MAX_DELAY_MS = 4_000;

// nodemailer's codes for a server that cannot be reached or a connection that broke.
const CONNECTION_ERROR_CODES = new Set([
  'ECONNECTION',
  'ESOCKET',
  'ETIMEDOUT',
  'EDNS',
  'ETLS',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
]);

const AUTH_ERROR_CODES = new Set(['EAUTH', 'ENOAUTH']);

// The connection failures worth another try: a server restarting, a connection reset. A TLS
// failure is not among them, whether nodemailer reports it as ETLS or as a socket error whose
// original code names the certificate: a certificate does not mend itself between two tries.
const RETRYABLE_CONNECTION_CODES = new Set([
  'ECONNECTION',
  'ESOCKET',
  'ETIMEDOUT',
  'EDNS',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
]);

/**
 * Node's codes for a TLS handshake or certificate check that failed: OpenSSL's verify errors
 * (UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_HAS_EXPIRED, SELF_SIGNED_CERT_IN_CHAIN, ...) and
 * Node's own ERR_TLS_* and ERR_SSL_*.
 */
const TLS_FAILURE_CODE =
  /CERT|CRL|^UNABLE_TO_|SELF_SIGNED|INVALID_CA|HOSTNAME_MISMATCH|^ERR_TLS_|^ERR_SSL_/;

/** The error fields nodemailer sets (SMTPConnection.SMTPError); all optional. */
interface SmtpErrorFields {
  code?: string;
  /** The system or TLS code under nodemailer's own (CERT_HAS_EXPIRED under ESOCKET). */
  originalCode?: string;
  command?: string;
  response?: string;
  /** The reply's code (421, 451, 550), when the error came from a server reply. */
  responseCode?: number;
  /** Per-recipient refusals, on an error that refused every recipient. */
  rejectedErrors?: SmtpRecipientError[];
}

/** nodemailer's record of one refused recipient. */
interface SmtpRecipientError {
  recipient?: string;
  response?: string;
  responseCode?: number;
}

/** Whether a reply code says "try again later" (RFC 5321 section 4.2.1). */
function isTransientCode(code: number | undefined): boolean {
  return code !== undefined && code >= 400 && code < 500;
}

/**
 * Whether a failed send may succeed when tried again: the server deferred it (4xx), for every
 * recipient it names, or the connection failed before the server answered at all.
 */
function isRetryable(err: unknown): boolean {
  if (isMailbusError(err)) {
    return false;
  }
  const fields = (err ?? {}) as SmtpErrorFields;
  if (fields.rejectedErrors && fields.rejectedErrors.length > 0) {
    return fields.rejectedErrors.every((refusal) => isTransientCode(refusal.responseCode));
  }
  if (fields.responseCode !== undefined) {
    return isTransientCode(fields.responseCode);
  }
  if (TLS_FAILURE_CODE.test(fields.originalCode ?? '')) {
    return false;
  }
  return RETRYABLE_CONNECTION_CODES.has(fields.code ?? '');
}

/** The wait before try number `attempt` + 1 of a message. */
function retryDelayMs(attempt: number): number {
  return Math.min(SMTP_RETRY_FIRST_DELAY_MS * 2 ** (attempt - 1), SMTP_RETRY_MAX_DELAY_MS);
}

export interface SmtpPublisherOptions {
  /** The queue account's address, `local@domain`: the envelope sender and the base of the rest. */
  address: string;
  /** DKIM-sign every message with this key (nodemailer signs the bytes as they are sent). */
  dkim?: DkimKey;
  logger: Logger;
}

/** A DKIM signing key: the public half is published as TXT at SELECTOR._domainkey.DOMAIN. */
export interface DkimKey {
  domainName: string;
  keySelector: string;
  /** The private key, PEM. */
  privateKey: string;
}

export class SmtpPublisher {
  private readonly transport: Transporter<SMTPPool.SentMessageInfo>;
  private readonly address: string;
  private readonly endpoint: string;
  private readonly log: Logger;
  private closed = false;

  constructor(
    private readonly config: SmtpConfig,
    options: SmtpPublisherOptions,
  ) {
    parseQueueAddress(options.address);
    this.address = options.address;
    this.endpoint = `${config.host}:${config.port}`;
    this.log = options.logger.child({ sub: 'smtp', endpoint: this.endpoint });

    const auth =
      config.user === undefined ? undefined : { user: config.user, pass: config.password ?? '' };
    this.transport = nodemailer.createTransport({
      pool: true,
      host: config.host,
      port: config.port,
      secure: config.secure,
      // A password is never sent in the clear: with credentials, STARTTLS is required;
      // without, it is used whenever the server offers it.
      requireTLS: auth !== undefined && !config.secure,
      tls: { ca: config.tls.ca, rejectUnauthorized: config.tls.rejectUnauthorized },
      auth,
      maxConnections: SMTP_POOL_CONNECTIONS,
      maxMessages: SMTP_POOL_MAX_MESSAGES,
      connectionTimeout: SMTP_CONNECT_TIMEOUT_MS,
      greetingTimeout: SMTP_GREETING_TIMEOUT_MS,
      socketTimeout: SMTP_SOCKET_TIMEOUT_MS,
      logger: false,
      dkim: options.dkim,
    });
  }

  /**
   * Submits each message once, to the topic address and to every group's address. Resolves
   * once the server has accepted all of them; rejects with a MailbusError naming how many it
   * did not accept, with the first failure's details.
   */
  async send(topic: string, groups: string[], messages: ComposedMessage[]): Promise<void> {
    if (this.closed) {
      throw new MailbusError(
        ERROR_CODES.CLOSED,
        `the SMTP publisher to ${this.endpoint} is closed`,
      );
    }
    const recipients = [
      topicAddress(this.address, topic),
      ...groups.map((group) => groupAddress(this.address, topic, group)),
    ];
    if (messages.length === 0) {
      return;
    }

    const started = Date.now();
    const results = await Promise.allSettled(
      messages.map((message) => this.submit(message, recipients)),
    );

    const failures = results.flatMap((result) =>
      result.status === 'rejected' ? [result.reason as MailbusError] : [],
    );
    const [first] = failures;
    if (first) {
      this.log.debug({ topic, failed: failures.length, sent: messages.length }, 'send failed');
      throw new MailbusError(
        first.code,
        `${failures.length} of ${messages.length} messages to topic "${topic}" were not ` +
          `accepted: ${first.message}`,
        { cause: first, command: first.command, response: first.response },
      );
    }
    this.log.debug(
      { topic, messages: messages.length, recipients: recipients.length, ms: Date.now() - started },
      'sent',
    );
  }

  /** Closes the pool's connections; safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    this.closed = true;
    this.transport.close();
  }

  /**
   * Sends one message to `recipients`, again after a backoff while the server defers it or the
   * connection fails (see the top of this file); the recipients it accepted are not sent to
   * again. Fails at once on a permanent refusal, and after SMTP_SEND_MAX_ATTEMPTS tries.
   */
  private async submit(message: ComposedMessage, recipients: string[]): Promise<void> {
    let pending = recipients;
    for (let attempt = 1; ; attempt += 1) {
      let deferred: SmtpRecipientError[];
      try {
        deferred = await this.offer(message, pending);
      } catch (err) {
        if (!isRetryable(err) || attempt >= SMTP_SEND_MAX_ATTEMPTS || this.closed) {
          throw this.toMailbusError(err, message, attempt);
        }
        await this.pauseBeforeRetry(message, attempt, errorText(err));
        continue;
      }
      if (deferred.length === 0) {
        return;
      }

      const addresses = deferred.map((refusal) => refusal.recipient ?? '?').join(', ');
      const response = deferred[0]?.response;
      if (attempt >= SMTP_SEND_MAX_ATTEMPTS || this.closed) {
        throw new MailbusError(
          ERROR_CODES.PROTOCOL,
          `the SMTP server at ${this.endpoint} still deferred message ${message.id} for ` +
            `${addresses} after ${attempt} attempts: ${this.scrub(response ?? '')}`,
          { command: 'RCPT TO', response: response && this.scrub(response) },
        );
      }
      pending = pending.filter((address) =>
        deferred.some((refusal) => sameAddress(refusal.recipient, address)),
      );
      await this.pauseBeforeRetry(message, attempt, `deferred for ${addresses}: ${response}`);
    }
  }

  /**
   * One try of one message. Resolves with the recipients the server deferred (4xx) and did not
   * take this time; throws when it refused one for good (5xx) or the whole try failed.
   */
  private async offer(
    message: ComposedMessage,
    recipients: string[],
  ): Promise<SmtpRecipientError[]> {
    const info = await this.transport.sendMail({
      envelope: { from: this.address, to: recipients },
      raw: message.raw,
    });
    if (info.rejected.length === 0) {
      return [];
    }

    // A server may take the message for some recipients and refuse others. Refused for good is
    // a failure, because a group without its copy never sees the message; deferred is retried.
    const reported = (info as { rejectedErrors?: SmtpRecipientError[] }).rejectedErrors ?? [];
    const refusals = info.rejected.map(String).map(
      (address): SmtpRecipientError =>
        reported.find((refusal) => sameAddress(refusal.recipient, address)) ?? {
          recipient: address,
        },
    );
    const permanent = refusals.filter((refusal) => !isTransientCode(refusal.responseCode));
    if (permanent.length > 0) {
      const response = permanent[0]?.response ?? info.response;
      throw new MailbusError(
        ERROR_CODES.PROTOCOL,
        `the SMTP server at ${this.endpoint} refused message ${message.id} for ` +
          `${permanent.map((refusal) => refusal.recipient).join(', ')}: ${this.scrub(response)}`,
        { command: 'RCPT TO', response: this.scrub(response) },
      );
    }
    return refusals;
  }

  private async pauseBeforeRetry(
    message: ComposedMessage,
    attempt: number,
    reason: string,
  ): Promise<void> {
    const delayMs = retryDelayMs(attempt);
    this.log.warn(
      { id: message.id, attempt, delayMs, err: this.scrub(reason) },
      'SMTP send failed for now; retrying',
    );
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }

  private toMailbusError(err: unknown, message: ComposedMessage, attempts: number): MailbusError {
    if (isMailbusError(err)) {
      return err;
    }
    const tries = attempts > 1 ? ` (after ${attempts} attempts)` : '';
    const fields = (err ?? {}) as SmtpErrorFields;
    const code = fields.code ?? '';
    const response = fields.response === undefined ? undefined : this.scrub(fields.response);
    const details = { cause: err, command: fields.command, response };

    if (AUTH_ERROR_CODES.has(code)) {
      return new MailbusError(
        ERROR_CODES.AUTH,
        `SMTP login failed for ${this.config.user ?? '(no user)'} at ${this.endpoint}` +
          (response ? `: ${response}` : ''),
        { command: fields.command, response },
      );
    }
    if (CONNECTION_ERROR_CODES.has(code)) {
      return new MailbusError(
        ERROR_CODES.CONNECTION,
        `cannot reach the SMTP server at ${this.endpoint}${tries}: ${this.scrub(errorText(err))}`,
        details,
      );
    }
    return new MailbusError(
      ERROR_CODES.PROTOCOL,
      `the SMTP server at ${this.endpoint} refused message ${message.id}` +
        (fields.command ? ` at ${fields.command}` : '') +
        `${tries}: ${response ?? this.scrub(errorText(err))}`,
      details,
    );
  }

  // The password is never part of a message, whatever a server echoes back.
  private scrub(text: string): string {
    const password = this.config.password;
    return password ? text.split(password).join('***') : text;
  }
}

/** Whether two addresses are the same mailbox, ignoring case (nodemailer may change it). */
function sameAddress(a: string | undefined, b: string): boolean {
  return a !== undefined && a.toLowerCase() === b.toLowerCase();
}
