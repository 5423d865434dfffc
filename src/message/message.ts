// What a publisher hands to mailbus and what a handler receives: the queue's view of a message.

export type Priority = 'high' | 'normal';

/** A message to publish. Only the payload is required. */
export interface OutgoingMessage {
  /** Any JSON-serialisable value. */
  payload: unknown;
  /** The message id to use instead of a generated one (becomes the Message-ID). */
  id?: string;
  /** Ordering key, carried in the X-Mailbus-Key header field. */
  key?: string;
  /** Extra header fields, sent as they are. */
  headers?: Record<string, string>;
  /** The Subject; by default the topic in brackets and the start of the payload. */
  subject?: string;
  priority?: Priority;
}

/** A message as a handler sees it. */
export interface Message {
  /** The Message-ID without its angle brackets. */
  id: string;
  topic: string;
  group: string;
  /** 1 on the first delivery, one more on each redelivery. */
  attempt: number;
  key?: string;
  priority: Priority;
  subject: string;
  /** When the message was published (its Date header), if it had a valid one. */
  date?: Date;
  /**
   * Header fields, lower-cased names, decoded values. A field that occurs more than once keeps
   * its first (topmost) occurrence. Our own X-Mailbus-* fields and the body's MIME fields are
   * left out: they are the typed properties above and the payload.
   */
  headers: Record<string, string>;
  /** The parsed JSON body; for mail that is not ours, the text (or else the HTML) body. */
  payload: unknown;
  /** The media type the payload came from, such as application/json or text/plain. */
  contentType: string;
  /** Attachments of mail that is not ours, described but not loaded into the payload. */
  attachments: AttachmentInfo[];
  /** The last error of the previous attempt, when this is a redelivery. */
  lastError?: string;
}

export interface AttachmentInfo {
  filename?: string;
  contentType: string;
  size: number;
}
