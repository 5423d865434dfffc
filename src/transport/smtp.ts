// Publishing through SMTP: each message is submitted once, in one transaction addressed to the
// topic and to every group, and the mail server fans it out to their mailboxes like a mailing
// list. Resolves when the server has accepted every message for every recipient.

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

/** The error fields nodemailer sets (SMTPConnection.SMTPError); all optional. */
interface SmtpErrorFields {
  code?: string;
  command?: string;
  response?: string;
}

export interface SmtpPublisherOptions {
  /** The queue account's address, `local@domain`: the envelope sender and the base of the rest. */
  address: string;
  logger: Logger;
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

  private async submit(message: ComposedMessage, recipients: string[]): Promise<void> {
    let info: SMTPPool.SentMessageInfo;
    try {
      info = await this.transport.sendMail({
        envelope: { from: this.address, to: recipients },
        raw: message.raw,
      });
    } catch (err) {
      throw this.toMailbusError(err, message);
    }

    // A server may take the message for some recipients and refuse others: that is a failure,
    // because a group without its copy never sees the message.
    if (info.rejected.length > 0) {
      const rejected = info.rejected.map(String).join(', ');
      throw new MailbusError(
        ERROR_CODES.PROTOCOL,
        `the SMTP server at ${this.endpoint} refused message ${message.id} for ${rejected}`,
        { command: 'RCPT TO', response: info.response },
      );
    }
  }

  private toMailbusError(err: unknown, message: ComposedMessage): MailbusError {
    if (isMailbusError(err)) {
      return err;
    }
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
        `cannot reach the SMTP server at ${this.endpoint}: ${this.scrub(errorText(err))}`,
        details,
      );
    }
    return new MailbusError(
      ERROR_CODES.PROTOCOL,
      `the SMTP server at ${this.endpoint} refused message ${message.id}` +
        (fields.command ? ` at ${fields.command}` : '') +
        `: ${response ?? this.scrub(errorText(err))}`,
      details,
    );
  }

  // The password is never part of a message, whatever a server echoes back.
  private scrub(text: string): string {
    const password = this.config.password;
    return password ? text.split(password).join('***') : text;
  }
}
