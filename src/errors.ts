// The errors mailbus raises: one class hierarchy, one table of stable codes that callers can
// branch on, and the underlying error kept as `cause`.

export const ERROR_CODES = {
  /** A topic, group, key or header name breaks the name grammar (see names.ts). */
  INVALID_NAME: 'EINVALIDNAME',
  /** A payload is not JSON-serialisable, or a CLI argument is not valid JSON. */
  INVALID_PAYLOAD: 'EINVALIDPAYLOAD',
  /** An option or a connection string is malformed. */
  INVALID_OPTION: 'EINVALIDOPTION',
  /** A message is larger than the configured limit. */
  MESSAGE_TOO_LARGE: 'ETOOLARGE',
  /** The server could not be reached, or the connection dropped. */
  CONNECTION: 'ECONNECTION',
  /** The server refused the credentials. */
  AUTH: 'EAUTH',
  /** The server answered a command with NO or BAD, or SMTP refused a message. */
  PROTOCOL: 'EPROTOCOL',
  /** The local store failed: a file system error on the Maildir. */
  STORAGE: 'ESTORAGE',
  /** The lease on a claimed message was lost: another consumer may now hold it. */
  LEASE_LOST: 'ELEASELOST',
  /** The client or worker was closed while the call was running. */
  CLOSED: 'ECLOSED',
  /** A warning, not a failure: the group is paused, so its consumers claim nothing. */
  PAUSED: 'EPAUSED',
} as const;

export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

export interface MailbusErrorDetails {
  cause?: unknown;
  /** The protocol command that failed, without its arguments when they could hold secrets. */
  command?: string;
  /** The server's reply to that command. */
  response?: string;
  mailbox?: string;
}

export class MailbusError extends Error {
  override name = 'MailbusError';
  readonly code: ErrorCode;
  readonly command?: string;
  readonly response?: string;
  readonly mailbox?: string;

  constructor(code: ErrorCode, message: string, details: MailbusErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.command = details.command;
    this.response = details.response;
    this.mailbox = details.mailbox;
  }
}

/** Some claims could not be settled because this consumer no longer held them. */
export class LeaseLostError extends MailbusError {
  override name = 'LeaseLostError';

  constructor(
    message: string,
    /** The locations of the claims that were lost. */
    readonly locations: string[],
  ) {
    super(ERROR_CODES.LEASE_LOST, message);
  }
}

export function isMailbusError(err: unknown, code?: ErrorCode): err is MailbusError {
  return err instanceof MailbusError && (code === undefined || err.code === code);
}

/** The text of any thrown value, for error reports and logs. */
export function errorText(err: unknown): string {
  if (err instanceof Error) {
    return err.message;
  }
  return String(err);
}
