// Errors a handler throws to steer its message, beyond "this attempt failed, try again later".

/** Give up on this message now: it goes to the dead letters without further attempts. */
export class DeadLetterError extends Error {
  override name = 'DeadLetterError';
}

/** Try this message again after `delayMs`, instead of the worker's backoff. */
export class RetryError extends Error {
  override name = 'RetryError';

  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
  }
}

/** The handler ran past its time limit; its attempt counts as failed. */
export class HandlerTimeoutError extends Error {
  override name = 'HandlerTimeoutError';
}

/** The consumer holding the message stopped proving it was alive before settling it. */
export class LeaseExpiredError extends Error {
  override name = 'LeaseExpiredError';
}
