// One IMAP connection of the IMAP store: connecting and reconnecting with a bounded backoff,
// running one task at a time on it, and turning imapflow's errors into MailbusErrors that name
// the server and the command but never the password.

import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImapFlow } from 'imapflow';
import type { ExistsEvent, Logger as ImapflowLogger } from 'imapflow';
import type { ImapConfig } from '../../config/connection.js';
import { ERROR_CODES, MailbusError, errorText, isMailbusError } from '../../errors.js';
import type { ErrorCode, MailbusErrorDetails } from '../../errors.js';
import type { Logger } from '../../log.js';

/** Every connection of the process reports here when it connects again after a drop. */
export const imapConnectionEvents = new EventEmitter<{ reconnected: [role: string] }>();

/** How long to wait for TCP, TLS and the greeting: a queue should fail fast, not in 90 s. */
export const CONNECT_TIMEOUT_MS = 10_000;

/**
 * How long the server may stay silent while this side waits for it: the deadline of every
 * command (a command the server has said nothing about for this long fails, and its
 * connection is destroyed; the next task reconnects). A TCP connection that stops forwarding
 * without closing (a NAT entry that expired, a peer that froze) is found out by this check
 * only: nothing else would ever tell. imapflow enforces it as its socket timeout. On an IDLEing
 * connection a silence this long is no fault by itself: imapflow then sends a NOOP, which must
 * be answered within the same time, so a dead IDLE is noticed within twice this.
 */
export const COMMAND_TIMEOUT_MS = 10_000;

/**
 * How long a connection that does not IDLE (the settle connection) may sit unused before it
 * sends a NOOP. Without one, imapflow would close it at the socket timeout as dead, and the next
 * settle or heartbeat would pay for a new login. Half the timeout, so the NOOP always comes first.
 */
export const KEEPALIVE_INTERVAL_MS = COMMAND_TIMEOUT_MS / 2;

/** Wait before the second connect attempt after a failure; it doubles with each failure. */
export const RECONNECT_BASE_DELAY_MS = 100;

/** The longest wait between connect attempts, so a worker notices a recovered server soon. */
export const RECONNECT_MAX_DELAY_MS = 5_000;

/**
 * How long a claim connection sits unused before it IDLEs: short, because waitForMessages
 * only hears of new mail while IDLE runs (or during a command). The claim connection is free
 * while handlers run, so the only cost is breaking IDLE before the next claim: one round trip.
 */
export const CLAIM_IDLE_DELAY_MS = 100;

/** Why the store needs each extension it checks for after login. */
const WHY: Record<string, string> = {
  CONDSTORE: 'to claim messages exclusively with a conditional STORE (RFC 7162)',
  MOVE: 'to move claimed messages out of a group atomically (RFC 6851)',
  UIDPLUS: 'to learn where a claimed message was moved (COPYUID, RFC 4315)',
};

/**
 * Extensions each kind of connection needs. The store's own connection checks CONDSTORE and
 * MOVE too, so that open() fails at once on a server that claimers could not work with.
 */
export const REQUIRED_CAPABILITIES = {
  store: ['CONDSTORE', 'MOVE'],
  claim: ['CONDSTORE', 'MOVE', 'UIDPLUS'],
  settle: ['MOVE', 'UIDPLUS'],
} as const;

// Error codes of Node's sockets and of imapflow that mean the connection is gone or never was.
const CONNECTION_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'NoConnection',
  'EConnectionClosed',
  'StateLogout',
  'ClosedAfterConnectText',
  'ClosedAfterConnectTLS',
  'CONNECT_TIMEOUT',
  'GREETING_TIMEOUT',
  'UPGRADE_TIMEOUT',
  'ETIMEOUT',
]);

export interface ImapConnectionOptions {
  /** What this connection is for ('store', 'claim', 'settle'): tags its log records. */
  role: string;
  logger: Logger;
  /** Extensions this connection needs: fails after login without them. */
  capabilities: readonly string[];
  /**
   * ENABLE CONDSTORE (the default). The settle connection goes without: with CONDSTORE on, a
   * STORE .SILENT still answers with one FETCH (MODSEQ) per message, which settling never reads.
   */
  condstore?: boolean;
  /** The mailbox to keep selected, again after each reconnect; tasks run with it selected. */
  mailbox?: string;
  /** IDLE on `mailbox` whenever the connection is unused (the claim connection). */
  idle?: boolean;
  /**
   * Keep the connection open while it is unused, with a NOOP every KEEPALIVE_INTERVAL_MS (for
   * a connection that does not IDLE). Otherwise an unused connection is closed after
   * COMMAND_TIMEOUT_MS, and reopened by the next task.
   */
  keepAlive?: boolean;
  /** Called after each successful login, with the fresh client. */
  onConnect?: (client: ImapFlow) => void;
  /** Called when the selected mailbox reports more messages than it had. */
  onNewMail?: () => void;
  /** Called when the connection closes, for whatever reason. */
  onClose?: () => void;
}

/** What a task is doing, for error messages: the command and the mailbox it works on. */
export interface TaskContext {
  command: string;
  mailbox?: string;
}

/** imapflow error fields this module reads; all optional, as imapflow sets them case by case. */
interface ImapflowErrorFields {
  code?: string;
  authenticationFailed?: boolean;
  tlsFailed?: boolean;
  responseStatus?: string;
  responseText?: string;
  mailboxMissing?: boolean;
}

export class ImapConnection {
  private client: ImapFlow | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private failures = 0;
  private everConnected = false;
  private lastFailureAt = 0;
  private closed = false;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  // Aborted by close(), which must not wait out a reconnect backoff.
  private readonly closeSignal = new AbortController();
  private readonly log: Logger;

  constructor(
    private readonly config: ImapConfig,
    private readonly options: ImapConnectionOptions,
  ) {
    this.log = options.logger.child({ sub: 'imap', role: options.role });
  }

  /** host:port, for messages. */
  get endpoint(): string {
    return `${this.config.host}:${this.config.port}`;
  }

  /**
   * Runs `task` with this connection to itself: tasks run one after another. Connects first if
   * the connection is down (after the backoff that previous failures earned). `mailbox` (by
   * default the one of the options; null for none) is selected for the task, and IDLE is kept
   * off until the task ends.
   */
  async run<T>(
    context: TaskContext,
    task: (client: ImapFlow) => Promise<T>,
    mailbox: string | null = this.options.mailbox ?? null,
  ): Promise<T> {
    return await this.exclusive(async () => {
      let lock: { release(): void } | undefined;
      try {
        const client = await this.connected();
        if (mailbox !== null) {
          lock = await client.getMailboxLock(mailbox);
        }
        // A raw command must not be sent into a running IDLE; any imapflow command breaks it.
        if (client.idling) {
          await client.noop();
        }
        return await task(client);
      } catch (err) {
        throw this.toMailbusError(err, {
          ...context,
          mailbox: context.mailbox ?? mailbox ?? undefined,
        });
      } finally {
        lock?.release();
      }
    });
  }

  /**
   * Connects now unless connected, and selects the mailbox of the options: to fail early on a
   * bad address or bad credentials, and to have a mailbox selected for IDLE.
   */
  async open(): Promise<void> {
    await this.exclusive(async () => {
      try {
        const client = await this.connected();
        const mailbox = this.options.mailbox;
        if (mailbox !== undefined && client.mailbox && client.mailbox.path === mailbox) {
          return;
        }
        if (mailbox !== undefined) {
          await client.mailboxOpen(mailbox);
        }
      } catch (err) {
        throw this.toMailbusError(err, { command: 'SELECT', mailbox: this.options.mailbox });
      }
    });
  }

  /** Whether the connection is up and logged in right now. */
  get usable(): boolean {
    return this.client?.usable ?? false;
  }

  /** Logs out; safe to call twice. The connection is not reopened afterwards. */
  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    this.closed = true;
    clearTimeout(this.keepAliveTimer);
    this.closeSignal.abort();
    await this.tail.catch(() => undefined);

    const client = this.client;
    this.client = undefined;
    if (!client) {
      return;
    }
    try {
      await client.logout();
    } catch (err) {
      this.log.debug({ err: errorText(err) }, 'logout failed; closing the socket');
      client.close();
    }
  }

  /** Turns any error of a task into a MailbusError; a connection error drops the client. */
  toMailbusError(err: unknown, context: TaskContext): MailbusError {
    if (isMailbusError(err)) {
      return err;
    }
    const fields = (err ?? {}) as ImapflowErrorFields;
    const lost = !this.client?.usable || CONNECTION_ERROR_CODES.has(fields.code ?? '');
    const where = context.mailbox === undefined ? '' : ` on ${context.mailbox}`;

    if (fields.responseStatus === 'NO' || fields.responseStatus === 'BAD') {
      const response = `${fields.responseStatus} ${fields.responseText ?? ''}`.trim();
      return this.error(
        ERROR_CODES.PROTOCOL,
        `IMAP ${context.command}${where} failed at ${this.endpoint}: ${response}`,
        { cause: err, command: context.command, response, mailbox: context.mailbox },
      );
    }
    if (fields.mailboxMissing) {
      return this.error(
        ERROR_CODES.PROTOCOL,
        `IMAP mailbox ${context.mailbox ?? '?'} does not exist at ${this.endpoint}`,
        { cause: err, command: context.command, mailbox: context.mailbox },
      );
    }
    if (lost) {
      this.drop();
      return this.error(
        ERROR_CODES.CONNECTION,
        `IMAP connection to ${this.endpoint} lost during ${context.command}${where}: ` +
          describeError(err),
        { cause: err, command: context.command, mailbox: context.mailbox },
      );
    }
    return this.error(
      ERROR_CODES.PROTOCOL,
      `IMAP ${context.command}${where} failed at ${this.endpoint}: ${describeError(err)}`,
      { cause: err, command: context.command, mailbox: context.mailbox },
    );
  }

  private async exclusive<T>(task: () => Promise<T>): Promise<T> {
    clearTimeout(this.keepAliveTimer);
    const result = this.tail.then(() => {
      if (this.closed) {
        throw new MailbusError(ERROR_CODES.CLOSED, `IMAP connection to ${this.endpoint} is closed`);
      }
      return task();
    });
    this.tail = result.catch(() => undefined);
    const tail = this.tail;
    void tail.then(() => {
      // Only the task that ends the queue leaves the connection unused.
      if (this.tail === tail) {
        this.scheduleKeepAlive();
      }
    });
    return await result;
  }

  private scheduleKeepAlive(): void {
    if (!this.options.keepAlive || this.closed) {
      return;
    }
    clearTimeout(this.keepAliveTimer);
    this.keepAliveTimer = setTimeout(() => void this.keepAlive(), KEEPALIVE_INTERVAL_MS);
    this.keepAliveTimer.unref();
  }

  // A NOOP on a connection that is up; a connection that is down stays down until a task needs
  // it. A NOOP the server does not answer fails the connection at the socket timeout.
  private async keepAlive(): Promise<void> {
    if (!this.usable) {
      return;
    }
    await this.exclusive(async () => {
      const client = this.client;
      if (client?.usable) {
        await client.noop();
      }
    }).catch((err: unknown) => {
      this.log.debug({ err: errorText(err) }, 'keepalive failed');
    });
  }

  private async connected(): Promise<ImapFlow> {
    if (this.client?.usable) {
      return this.client;
    }
    this.drop();
    await this.backoff();
    if (this.closed) {
      throw new MailbusError(ERROR_CODES.CLOSED, `IMAP connection to ${this.endpoint} is closed`);
    }

    const client = this.createClient();
    try {
      await client.connect();
    } catch (err) {
      this.failures += 1;
      this.lastFailureAt = Date.now();
      client.close();
      throw this.connectError(err);
    }

    try {
      this.checkCapabilities(client);
    } catch (err) {
      await client.logout().catch(() => client.close());
      throw err;
    }
    this.failures = 0;
    this.client = client;
    if (this.everConnected) {
      imapConnectionEvents.emit('reconnected', this.options.role);
    }
    this.everConnected = true;
    this.log.debug({ endpoint: this.endpoint }, 'connected');
    this.options.onConnect?.(client);
    return client;
  }

  private createClient(): ImapFlow {
    const { host, port, secure, user, password, tls } = this.config;
    const client = new ImapFlow({
      host,
      port,
      secure,
      auth: { user, pass: password },
      tls: { ca: tls.ca, rejectUnauthorized: tls.rejectUnauthorized },
      logger: imapflowLogger(this.log, password),
      clientInfo: { name: 'mailbus' },
      disableAutoIdle: !this.options.idle,
      disableAutoEnable: this.options.condstore === false,
      // With QRESYNC a MOVE of a batch is reported in one VANISHED line, not an EXPUNGE line
      // per message that imapflow would parse one by one.
      qresync: true,
      autoIdleDelay: CLAIM_IDLE_DELAY_MS,
      connectionTimeout: CONNECT_TIMEOUT_MS,
      greetingTimeout: CONNECT_TIMEOUT_MS,
      socketTimeout: COMMAND_TIMEOUT_MS,
    });

    // imapflow emits 'error' once before it closes; without a listener Node would throw it.
    client.on('error', (err: Error) => {
      this.log.debug({ err: scrub(errorText(err), password) }, 'connection error');
    });
    client.on('close', () => {
      if (this.client === client) {
        this.client = undefined;
      }
      this.options.onClose?.();
    });
    client.on('exists', (event: ExistsEvent) => {
      if (event.count > event.prevCount) {
        this.options.onNewMail?.();
      }
    });
    return client;
  }

  private checkCapabilities(client: ImapFlow): void {
    for (const capability of this.options.capabilities) {
      // CONDSTORE only counts once enabled: imapflow sends ENABLE CONDSTORE after login.
      const present =
        capability === 'CONDSTORE'
          ? client.enabled.has(capability)
          : client.capabilities.has(capability);
      if (!present) {
        throw this.error(
          ERROR_CODES.PROTOCOL,
          `the IMAP server at ${this.endpoint} lacks the ${capability} extension, which ` +
            `mailbus needs ${WHY[capability] ?? 'to work'}`,
          { command: 'CAPABILITY' },
        );
      }
    }
  }

  private connectError(err: unknown): MailbusError {
    const fields = (err ?? {}) as ImapflowErrorFields;
    if (fields.authenticationFailed) {
      const reason = fields.responseText ? `: ${fields.responseText}` : '';
      // No cause: the error object of a failed login is the one place a credential could leak.
      return this.error(
        ERROR_CODES.AUTH,
        `IMAP login failed for ${this.config.user} at ${this.endpoint}${reason}`,
        { command: 'LOGIN', response: fields.responseText },
      );
    }
    const tls = fields.tlsFailed ? 'TLS with ' : '';
    return this.error(
      ERROR_CODES.CONNECTION,
      `cannot connect ${tls}to the IMAP server at ${this.endpoint}: ${describeError(err)}`,
      { cause: err, command: 'CONNECT' },
    );
  }

  // Waits out the backoff owed to earlier failed connects: nothing after a success.
  private async backoff(): Promise<void> {
    if (this.failures === 0) {
      return;
    }
    const delay = Math.min(
      RECONNECT_BASE_DELAY_MS * 2 ** (this.failures - 1),
      RECONNECT_MAX_DELAY_MS,
    );
    const remaining = this.lastFailureAt + delay - Date.now();
    if (remaining > 0) {
      this.log.debug({ delayMs: remaining, failures: this.failures }, 'reconnect backoff');
      await sleep(remaining, undefined, { signal: this.closeSignal.signal }).catch(() => undefined);
    }
  }

  private drop(): void {
    const client = this.client;
    this.client = undefined;
    if (client && !client.isClosed) {
      client.close();
    }
  }

  private error(code: ErrorCode, message: string, details: MailbusErrorDetails): MailbusError {
    const password = this.config.password;
    const response = details.response === undefined ? undefined : scrub(details.response, password);
    return new MailbusError(code, scrub(message, password), { ...details, response });
  }
}

function describeError(err: unknown): string {
  const fields = (err ?? {}) as ImapflowErrorFields;
  const text = errorText(err);
  return fields.code && !text.includes(fields.code) ? `${fields.code} ${text}` : text;
}

// The password is never part of a message or a log record, whatever a server echoes back.
function scrub(text: string, password: string): string {
  return password.length > 0 ? text.split(password).join('***') : text;
}

/**
 * imapflow's own records, all at debug level: its info level logs every command. Records
 * with a string `msg` are scrubbed of the password; imapflow already hides LOGIN arguments.
 * isLevelEnabled matters for speed: without it imapflow serialises every command and every
 * response line for a log record, which more than doubled the cost of a claim.
 */
function imapflowLogger(log: Logger, password: string): ImapflowLogger {
  const levelCheck = (log as { isLevelEnabled?: (level: string) => boolean }).isLevelEnabled;
  const debugEnabled = (): boolean =>
    typeof levelCheck === 'function' ? levelCheck.call(log, 'debug') : false;
  const forward = (record: unknown): void => {
    if (typeof record !== 'object' || record === null) {
      return;
    }
    const { msg, ...fields } = record as { msg?: unknown };
    const message = typeof msg === 'string' ? scrub(msg, password) : undefined;
    log.debug({ sub: 'imapflow', ...scrubFields(fields, password) }, message);
  };
  const isLevelEnabled = (level: string): boolean => level !== 'trace' && debugEnabled();
  // imapflow's Logger type lacks isLevelEnabled, but getLogger() in imap-flow.js asks for it.
  const logger: ImapflowLogger & { isLevelEnabled(level: string): boolean } = {
    debug: forward,
    info: forward,
    warn: forward,
    error: forward,
    isLevelEnabled,
  };
  return logger;
}

function scrubFields(fields: Record<string, unknown>, password: string): Record<string, unknown> {
  const clean: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value instanceof Error) {
      clean[key] = scrub(errorText(value), password);
    } else if (typeof value === 'string') {
      clean[key] = scrub(value, password);
    } else if (typeof value !== 'object' || value === null) {
      clean[key] = value;
    }
  }
  return clean;
}
