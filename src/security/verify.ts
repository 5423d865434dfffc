// The verification step a consumer runs on each claimed message before its handler sees it.
// It answers with nothing (hand it to the handler) or with the reason to quarantine it:
// unsigned, unknown key, bad signature, stale timestamp, replayed id, or a message too broken
// to tell. Checking never throws for anything a sender wrote.

import { createHash } from 'node:crypto';
import PostalMime, { decodeWords } from 'postal-mime';
import { ERROR_CODES, MailbusError, errorText } from '../errors.js';
import { MAX_HEADER_BYTES, MAX_MIME_DEPTH } from '../message/decode.js';
import { HEADER } from '../message/headers.js';
import { headerEnd, setHeaders } from '../message/rewrite.js';
import { checkDkim } from './dkim.js';
import type { DkimPolicy } from './dkim.js';
import type { QuarantineVerdict } from './quarantine.js';
import {
  SEAL_HEADER,
  SIGNATURE_HEADER,
  parseSignatureValue,
  payloadDigest,
  sealMatches,
  sealValue,
  signatureMatches,
} from './signature.js';
import type { SealedFields, SigningKey } from './signature.js';

/** Remembers accepted ids; answers whether an id was already accepted within the window. */
export type ReplayGuard = (id: string, windowMs: number) => Promise<boolean>;

export interface VerifierOptions {
  topic: string;
  group: string;
  /** Every key a signature may be made with; the first also seals retry copies. */
  keys: SigningKey[];
  /** Require a valid DKIM signature of one of these domains, instead of or besides keys. */
  dkim?: DkimPolicy;
  /** How far a signature's time may be from this clock, either way, and the replay window. */
  windowMs: number;
  replayGuard: ReplayGuard;
  now?: () => number;
}

export interface CheckContext {
  /**
   * The message was taken over from a consumer that died: it may have accepted the id already,
   * so the replay check is left out (the signature and its time are still checked).
   */
  recovered?: boolean;
}

interface Parsed {
  headers: Map<string, string>;
  contentType: string;
  body: Buffer | undefined;
}

export class Verifier {
  // Ids this process accepted, and when: a replay of a message still in flight is caught here
  // even before the store knows of it.
  private readonly accepted = new Map<string, number>();

  constructor(private readonly options: VerifierOptions) {
    if (options.keys.length === 0 && options.dkim === undefined) {
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        'verification needs keys or a DKIM policy',
      );
    }
  }

  /** Undefined when the message may be handled; the reason to quarantine it otherwise. */
  async check(raw: Buffer, context: CheckContext = {}): Promise<QuarantineVerdict | undefined> {
    let parsed: Parsed;
    try {
      parsed = await parse(raw);
    } catch (err) {
      return { reason: 'malformed', detail: `cannot be parsed as MIME: ${errorText(err)}` };
    }

    const seal = parsed.headers.get(SEAL_HEADER.toLowerCase());
    if (
      seal !== undefined &&
      this.options.keys.length > 0 &&
      sealMatches(this.options.keys, seal, this.sealedFromHeader(raw))
    ) {
      return undefined;
    }

    const verdict =
      this.options.keys.length > 0
        ? this.checkSignature(parsed)
        : await checkDkim(raw, this.options.dkim as DkimPolicy);
    if (verdict !== undefined) {
      return verdict;
    }
    if (this.options.keys.length > 0 && this.options.dkim !== undefined) {
      const dkim = await checkDkim(raw, this.options.dkim);
      if (dkim !== undefined) {
        return dkim;
      }
    }
    if (context.recovered || this.unsealableRetry(parsed)) {
      return undefined;
    }
    const id = messageIdOf(parsed);
    if (id === undefined) {
      return { reason: 'dkim', detail: 'a message needs a Message-ID to be checked for replays' };
    }
    if (this.seenHere(id) || (await this.options.replayGuard(id, this.options.windowMs))) {
      return {
        reason: 'replayed',
        detail: `id ${id} was already accepted within ${this.options.windowMs / 1000} s`,
      };
    }
    this.accepted.set(id, this.now());
    return undefined;
  }

  /**
   * Without keys there is nothing to seal a retry copy with: a copy that says it was attempted
   * before is let past the replay check (docs/security.md names what this leaves open).
   */
  private unsealableRetry(parsed: Parsed): boolean {
    const attempts = Number.parseInt(parsed.headers.get(HEADER.attempts.toLowerCase()) ?? '', 10);
    return this.options.keys.length === 0 && attempts > 0;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  private seenHere(id: string): boolean {
    const since = this.now() - this.options.windowMs;
    for (const [known, at] of this.accepted) {
      if (at >= since) {
        break; // in the order of insertion: the rest are younger
      }
      this.accepted.delete(known);
    }
    return this.accepted.has(id);
  }

  /**
   * The fields that seal a copy of an accepted message (a retry): it is accepted again without
   * a fresh signature time or replay check. The body must be unchanged.
   */
  sealFields(raw: Buffer): Record<string, string> {
    return { [SEAL_HEADER]: this.sealFor(raw) };
  }

  /** The message with a seal of the first key, replacing any seal it had. */
  seal(raw: Buffer): Buffer {
    return this.options.keys.length === 0 ? raw : setHeaders(raw, this.sealFields(raw));
  }

  private sealFor(raw: Buffer): string {
    const key = this.options.keys[0] as SigningKey;
    return sealValue(key, this.sealedFromHeader(raw));
  }

  private checkSignature(parsed: Parsed): QuarantineVerdict | undefined {
    const { keys, topic, windowMs } = this.options;
    const field = parsed.headers.get(SIGNATURE_HEADER.toLowerCase());
    if (field === undefined) {
      return { reason: 'unsigned', detail: `the message has no ${SIGNATURE_HEADER} field` };
    }
    const signature = parseSignatureValue(field);
    if (signature === undefined) {
      return { reason: 'bad-signature', detail: `${SIGNATURE_HEADER} cannot be read` };
    }
    const key = keys.find((candidate) => candidate.id === signature.keyId);
    if (key === undefined) {
      return { reason: 'unknown-key', detail: `no verification key ${signature.keyId}` };
    }
    const id = messageIdOf(parsed);
    if (id === undefined) {
      return { reason: 'bad-signature', detail: 'a signed message needs a Message-ID' };
    }
    if (parsed.body === undefined) {
      return { reason: 'bad-signature', detail: 'a signed message has one application/json body' };
    }
    const orderingKey = decodeWords(parsed.headers.get(HEADER.key.toLowerCase()) ?? '').trim();
    const fields = {
      id,
      topic,
      timestamp: signature.timestamp,
      key: orderingKey,
      digest: payloadDigest(parsed.body),
    };
    if (!signatureMatches(key, fields, signature.signature)) {
      return {
        reason: 'bad-signature',
        detail: `the signature of key ${key.id} does not match the message`,
      };
    }
    const now = this.now();
    const offsetMs = now - signature.timestamp * 1000;
    if (Math.abs(offsetMs) > windowMs) {
      const when = offsetMs > 0 ? 'old' : 'in the future';
      return {
        reason: 'stale',
        detail: `signed ${Math.round(Math.abs(offsetMs) / 1000)} s ${when}; the window is ${windowMs / 1000} s`,
      };
    }
    return undefined;
  }

  private sealedFromHeader(raw: Buffer): SealedFields {
    const { end } = headerEnd(raw);
    const header = raw.subarray(0, end).toString('latin1');
    const match = /^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)/im.exec(header);
    return this.sealedWith(raw, (match?.[1] ?? '').replace(/\r?\n/g, ''));
  }

  private sealedWith(raw: Buffer, messageId: string): SealedFields {
    const body = raw.subarray(headerEnd(raw).end);
    return {
      messageId: messageId.trim(),
      topic: this.options.topic,
      group: this.options.group,
      bodyDigest: createHash('sha256').update(body).digest('hex'),
    };
  }
}

async function parse(raw: Buffer): Promise<Parsed> {
  const email = await PostalMime.parse(raw, {
    maxNestingDepth: MAX_MIME_DEPTH,
    maxHeadersSize: MAX_HEADER_BYTES,
  });
  const headers = new Map<string, string>();
  for (const header of email.headers) {
    if (!headers.has(header.key)) {
      headers.set(header.key, header.value);
    }
  }
  const contentType = (headers.get('content-type') ?? 'text/plain').toLowerCase();
  const single = email.attachments.length === 1 && email.text === undefined;
  const json = contentType.split(';')[0]?.trim() === 'application/json';
  const content = single && json ? email.attachments[0]?.content : undefined;
  const body =
    content === undefined
      ? undefined
      : typeof content === 'string'
        ? Buffer.from(content, 'utf8')
        : Buffer.from(content instanceof Uint8Array ? content : new Uint8Array(content));
  return { headers, contentType, body };
}

function messageIdOf(parsed: Parsed): string | undefined {
  const value = parsed.headers.get('message-id')?.trim();
  if (!value) {
    return undefined;
  }
  return value.startsWith('<') && value.endsWith('>') ? value.slice(1, -1) : value;
}
