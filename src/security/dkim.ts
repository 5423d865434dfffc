// DKIM for mail that crosses organisations: the sending domain's mail server signs the message
// and publishes its public key in DNS, and a consumer that requires DKIM accepts only mail with
// a valid signature of a domain on its allow-list. mailauth verifies; the DNS look-ups go
// through a resolver the caller may replace (tests answer from memory, never the network).
//
// mailauth is loaded on the first check, not with this module: it adds about 20 MiB to a
// process's memory, which a consumer that does not require DKIM should not carry.

import { ERROR_CODES, MailbusError, errorText } from '../errors.js';
import type { QuarantineVerdict } from './quarantine.js';

/** Answers DNS queries: records of `rrtype` at `name`, as node:dns's resolve() does. */
export type DnsResolver = (name: string, rrtype: string) => Promise<string[][] | string[]>;

export interface DkimPolicy {
  /** Signing domains (the `d=` of a signature) that are trusted, compared without letter case. */
  domains: string[];
  /** The DNS resolver for public keys; node's own by default. */
  resolver?: DnsResolver;
}

export function checkDkimPolicy(policy: DkimPolicy): DkimPolicy {
  const domains = policy.domains.map((domain) => domain.trim().toLowerCase());
  if (domains.length === 0 || domains.some((domain) => !/^[a-z0-9.-]+$/.test(domain))) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      'requireDkim.domains must list one or more domain names',
    );
  }
  return { ...policy, domains };
}

/** Undefined when a signature of an allowed domain passes; the reason to quarantine otherwise. */
export async function checkDkim(
  raw: Buffer,
  policy: DkimPolicy,
): Promise<QuarantineVerdict | undefined> {
  let results;
  try {
    const { dkimVerify } = await import('mailauth/lib/dkim/verify.js');
    results = (await dkimVerify(raw, { resolver: policy.resolver })).results;
  } catch (err) {
    return { reason: 'dkim', detail: `DKIM cannot be checked: ${errorText(err)}` };
  }
  const passed = results
    .filter((result) => result.status.result === 'pass')
    .map((result) => result.signingDomain.toLowerCase());
  if (passed.some((domain) => policy.domains.includes(domain))) {
    return undefined;
  }
  if (passed.length > 0) {
    return {
      reason: 'dkim',
      detail: `signed by ${passed.join(', ')}, which is not an allowed domain`,
    };
  }
  const first = results.find((result) => result.status.result !== 'none');
  if (first === undefined) {
    return { reason: 'dkim', detail: 'the message has no DKIM signature' };
  }
  const comment = first.status.comment ? ` (${first.status.comment})` : '';
  return {
    reason: 'dkim',
    detail: `the DKIM signature of ${first.signingDomain} is ${first.status.result}${comment}`,
  };
}
