// mailbus: a message queue whose broker is email. This is the public API.

export { Mailbus, connect } from './client.js';
export type {
  ConnectOptions,
  ConsumeOptions,
  Handler,
  PublishOptions,
  ScheduleOptions,
  StartPoint,
  SubscribeOptions,
  SubscribeResult,
} from './client.js';
export type { HandlerContext } from './consumer/worker.js';
export { Worker } from './consumer/worker.js';
export {
  DeadLetterError,
  HandlerTimeoutError,
  LeaseExpiredError,
  RetryError,
} from './consumer/errors.js';
export { DeadLetters } from './admin/dead-letters.js';
export type { DeadLetter, DeadLetterDetail } from './admin/dead-letters.js';
export { Quarantine } from './admin/quarantine.js';
export type { QuarantinedDetail, QuarantinedMessage } from './admin/quarantine.js';
export type { QuarantineReason } from './security/quarantine.js';
export { canonicalForm, payloadDigest, signatureValue } from './security/signature.js';
export type { SignedFields, SigningKey } from './security/signature.js';
export type { WorkerSummary, StopReason } from './consumer/worker.js';
export { ERROR_CODES, LeaseLostError, MailbusError, isMailbusError } from './errors.js';
export type { ErrorCode } from './errors.js';
export type { Logger } from './log.js';
export type { AttachmentInfo, Message, OutgoingMessage, Priority } from './message/message.js';
export { NAME_MAX_LENGTH, checkName } from './names.js';
export type { GroupStats, Store } from './store/store.js';
