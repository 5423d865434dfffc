// A stand-in SMTP server in front of Postfix, for fault scenario 5. It owns one loopback port
// and is either down (nothing listens there: connections are refused) or up in one of three
// modes: `defer` answers every RCPT TO with 451, and `relay` hands each message to Postfix and
// answers with what Postfix answered, so a message this front accepted is one Postfix accepted.
// In either mode, chosen addresses can be refused (550) or deferred (451) a number of times.

import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import nodemailer from 'nodemailer';
import type { Transporter } from 'nodemailer';
import { SMTPServer } from 'smtp-server';

export type FrontMode = 'defer' | 'relay';

/** How long a closing front waits for open sessions before dropping them. */
const CLOSE_TIMEOUT_MS = 100;

/** An error smtp-server turns into a reply with this code. */
function reply(code: number, text: string): Error & { responseCode: number } {
  return Object.assign(new Error(text), { responseCode: code });
}

export class SmtpFront {
  mode: FrontMode = 'defer';
  /** RCPT TO addresses answered with 550 in every mode. */
  readonly refused = new Set<string>();
  /** RCPT TO addresses answered with 451 this many more times, in every mode. */
  readonly deferTimes = new Map<string, number>();
  /** RCPT TO commands seen, per address (lower case). */
  readonly recipients = new Map<string, number>();
  deferrals = 0;
  relayed = 0;

  private server: SMTPServer | undefined;
  private readonly relay: Transporter;

  private constructor(
    readonly port: number,
    postfix: { host: string; port: number },
  ) {
    this.relay = nodemailer.createTransport({
      host: postfix.host,
      port: postfix.port,
      secure: false,
      ignoreTLS: true,
      logger: false,
    });
  }

  /** A front for `postfix` on a free loopback port; down until up() is called. */
  static async create(postfix: { host: string; port: number }): Promise<SmtpFront> {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    return new SmtpFront(port, postfix);
  }

  /** Starts listening on the front's port. */
  async up(): Promise<void> {
    if (this.server) {
      return;
    }
    const server = new SMTPServer({
      disabledCommands: ['STARTTLS', 'AUTH'],
      authOptional: true,
      logger: false,
      closeTimeout: CLOSE_TIMEOUT_MS,
      onRcptTo: (address, _session, callback) => {
        const to = address.address.toLowerCase();
        this.recipients.set(to, (this.recipients.get(to) ?? 0) + 1);
        const deferrals = this.deferTimes.get(to) ?? 0;
        if (this.refused.has(to)) {
          callback(reply(550, '5.1.1 no such mailbox here'));
        } else if (deferrals > 0) {
          this.deferTimes.set(to, deferrals - 1);
          this.deferrals += 1;
          callback(reply(451, '4.2.1 this mailbox is busy, try again later'));
        } else if (this.mode === 'defer') {
          this.deferrals += 1;
          callback(reply(451, '4.3.2 not now, try again later'));
        } else {
          callback();
        }
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
          const to = session.envelope.rcptTo.map((rcpt) => rcpt.address);
          this.relay
            .sendMail({ envelope: { from, to }, raw: Buffer.concat(chunks) })
            .then(() => {
              this.relayed += 1;
              callback();
            })
            .catch((err: { responseCode?: number; message: string }) => {
              callback(reply(err.responseCode ?? 451, `relay to Postfix failed: ${err.message}`));
            });
        });
      },
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  /** Stops listening and drops open sessions: connections are refused from now on. */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  /** How often RCPT TO named this address. */
  rcptCount(address: string): number {
    return this.recipients.get(address.toLowerCase()) ?? 0;
  }

  async close(): Promise<void> {
    await this.down();
    this.relay.close();
  }
}
