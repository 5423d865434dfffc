// Logging: mailbus logs structured events through an injected pino-shaped logger, quiet by
// default. Each record carries a subsystem tag (`sub`) and the worker or connection it is about.
// Secrets are never part of a record: URLs are redacted before they are logged.

import { pino } from 'pino';

export interface Logger {
  debug(fields: object, message?: string): void;
  info(fields: object, message?: string): void;
  warn(fields: object, message?: string): void;
  error(fields: object, message?: string): void;
  child(bindings: object): Logger;
}

/** A logger that drops everything: the library's default. */
export const silentLogger: Logger = pino({ level: 'silent' });

/** A logger writing JSON lines to stderr at `level` (the CLI's: MAILBUS_LOG_LEVEL). */
export function stderrLogger(level: string): Logger {
  return pino({ level, base: { app: 'mailbus' } }, pino.destination(2));
}
