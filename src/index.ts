// mailbus: a message queue whose broker is email. This is the public API.

export { Mailbus, connect } from './client.js';
export type { ConnectOptions, ConsumeOptions, Handler, PublishOptions } from './client.js';
export { Worker } from './consumer/worker.js';
export type { WorkerSummary, StopReason } from './consumer/worker.js';
export { ERROR_CODES, LeaseLostError, MailbusError, isMailbusError } from './errors.js';
export type { ErrorCode } from './errors.js';
export type { Logger } from './log.js';
export type { AttachmentInfo, Message, OutgoingMessage, Priority } from './message/message.js';
export { NAME_MAX_LENGTH, checkName } from './names.js';
export type { GroupStats, Store } from './store/store.js';
