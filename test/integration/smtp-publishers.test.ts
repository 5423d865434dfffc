// Publishers that are not mailbus: Python's smtplib and swaks submit mail to Postfix, which
// delivers it over LMTP into Dovecot, where a mailbus worker handles it.

import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import type { Mailbus, Message } from '../../src/index.js';
import { setAliases } from '../servers/mail-servers.js';
import { imapOptions, mailServers } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';

const PYTHON_PUBLISHER = `
import json, smtplib, sys
from email.message import EmailMessage

host, port, to, order = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
message = EmailMessage()
message["From"] = "shop@example.org"
message["To"] = to
message["Subject"] = f"[orders] order {order} from Python"
message["X-Mailbus-Key"] = f"order-{order}"
message["X-Order-Source"] = "python"
body = json.dumps({"orderId": order, "customer": "Zoë", "total": 12.5})
message.set_content(body.encode("utf-8"), maintype="application", subtype="json")
with smtplib.SMTP(host, port) as smtp:
    smtp.send_message(message)
`;

function groupAddress(topic: string, group: string): string {
  const info = mailServers();
  return `${info.user}+${topic}.${group}@${info.domain}`;
}

/** Runs a worker until it has handled `count` messages (or fails the test after a while). */
async function handleAll(bus: Mailbus, topic: string, group: string, count: number) {
  const messages: Message[] = [];
  const worker = bus.consume(topic, (message) => void messages.push(message), {
    group,
    maxMessages: count,
    idleTimeoutMs: 20_000,
  });
  const summary = await worker.done;
  return { messages, summary };
}

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 30_000 });
  if (result.status !== 0) {
    throw new Error(`${command} failed (${result.status}): ${result.stderr}${result.stdout}`);
  }
}

describe('mail from other publishers through Postfix', () => {
  it('hands a worker what Python smtplib and swaks sent, payload and headers intact', async () => {
    const info = mailServers();
    const topic = uniqueTopic('smtp-in');
    const bus = await connect(imapOptions());
    try {
      await bus.subscribe(topic, 'default');
      const to = groupAddress(topic, 'default');
      run('python3', ['-c', PYTHON_PUBLISHER, info.host, String(info.smtpPort), to, '1001']);
      run('swaks', [
        '--server',
        `${info.host}:${info.smtpPort}`,
        '--from',
        'ops@example.org',
        '--to',
        to,
        '--header',
        'Subject: [orders] order 1002 from swaks',
        '--header',
        'X-Order-Source: swaks',
        '--header',
        'Message-Id: <order-1002@example.org>',
        '--header',
        'Content-Type: application/json; charset=utf-8',
        '--body',
        '{"orderId": 1002, "total": 7}',
      ]);

      const { messages, summary } = await handleAll(bus, topic, 'default', 2);
      expect(summary).toMatchObject({ handled: 2, reason: 'max' });
      const bySource = Object.fromEntries(messages.map((m) => [m.headers['x-order-source'], m]));

      expect(bySource.python).toMatchObject({
        topic,
        group: 'default',
        attempt: 1,
        key: 'order-1001',
        subject: '[orders] order 1001 from Python',
        contentType: 'application/json',
        payload: { orderId: 1001, customer: 'Zoë', total: 12.5 },
      });
      expect(bySource.python?.headers.from).toBe('shop@example.org');
      expect(bySource.swaks).toMatchObject({
        id: 'order-1002@example.org',
        subject: '[orders] order 1002 from swaks',
        payload: { orderId: 1002, total: 7 },
      });
      expect(bySource.swaks?.headers.received).toMatch(/Postfix|LMTP|ESMTP/i);
    } finally {
      await bus.close();
    }
  });

  it('fans a list address out to three groups, each handling every message once', async () => {
    const info = mailServers();
    const topic = uniqueTopic('list');
    const groups = ['billing', 'shipping', 'audit'];
    const list = `${topic}@${info.domain}`;
    const bus = await connect(imapOptions());
    try {
      for (const group of groups) {
        await bus.subscribe(topic, group);
      }
      await setAliases(info, { [list]: groups.map((group) => groupAddress(topic, group)) });

      const count = 5;
      for (let order = 1; order <= count; order += 1) {
        run('python3', [
          '-c',
          PYTHON_PUBLISHER,
          info.host,
          String(info.smtpPort),
          list,
          `${order}`,
        ]);
      }
      for (const group of groups) {
        const { messages } = await handleAll(bus, topic, group, count);
        const orders = messages.map((m) => (m.payload as { orderId: number }).orderId).sort();
        expect(orders).toEqual([1, 2, 3, 4, 5]);
        expect(new Set(messages.map((m) => m.id)).size).toBe(count);
      }
      const stats = await bus.stats(topic);
      expect(stats.filter((row) => groups.includes(row.group))).toEqual(
        groups.sort().map((group) => ({
          topic,
          group,
          waiting: 0,
          scheduled: 0,
          inFlight: 0,
          handled: count,
          dead: 0,
          quarantined: 0,
          consumers: 0,
        })),
      );
    } finally {
      await bus.close();
    }
  });

  it('publishes through SMTP with mailbus itself, one copy per group', async () => {
    const topic = uniqueTopic('smtp-out');
    const bus = await connect(imapOptions(true));
    try {
      await bus.subscribe(topic, 'default');
      await bus.subscribe(topic, 'analytics');
      const ids = await bus.publishBatch(topic, [{ payload: { n: 1 } }, { payload: { n: 2 } }]);
      for (const group of ['analytics', 'default']) {
        const { messages } = await handleAll(bus, topic, group, 2);
        expect(messages.map((m) => m.id).sort()).toEqual([...ids].sort());
      }
    } finally {
      await bus.close();
    }
  });
});

describe('mail that is not ours, through Postfix', () => {
  it('handles HTML-only, non-UTF-8, attachment and no-Message-ID mail without crashing', async () => {
    const info = mailServers();
    const topic = uniqueTopic('foreign');
    const bus = await connect(imapOptions());
    try {
      await bus.subscribe(topic, 'default');
      const to = groupAddress(topic, 'default');
      const server = ['--server', `${info.host}:${info.smtpPort}`, '--from', 'x@example.org'];
      const html = [
        '--to',
        to,
        '--header',
        'Subject: html only',
        '--header',
        'Content-Type: text/html; charset=utf-8',
        '--body',
        '<p>Hello <b>world</b></p>',
      ];
      const latin1 = [
        '--to',
        to,
        '--header',
        'Subject: latin1',
        '--header',
        'Content-Type: text/plain; charset=iso-8859-1',
        '--header',
        'Content-Transfer-Encoding: quoted-printable',
        '--body',
        'caf=E9 cr=E8me',
      ];
      const attachment = [
        '--to',
        to,
        '--header',
        'Subject: with attachment',
        '--body',
        'see file',
        '--attach-type',
        'application/octet-stream',
        '--attach-name',
        'data.bin',
        '--attach',
        '@/etc/hostname',
      ];
      run('swaks', [...server, ...html]);
      run('swaks', [...server, ...latin1]);
      run('swaks', [...server, ...attachment]);
      run('python3', [
        '-c',
        `
import smtplib, sys
raw = b"From: x@example.org\\r\\nTo: ${to}\\r\\nSubject: no id\\r\\n\\r\\nno message id here\\r\\n"
with smtplib.SMTP("${info.host}", ${info.smtpPort}) as s:
    s.sendmail("x@example.org", ["${to}"], raw)
`,
      ]);

      const { messages, summary } = await handleAll(bus, topic, 'default', 4);
      expect(summary).toMatchObject({ handled: 4, deadLettered: 0 });
      const bySubject = Object.fromEntries(messages.map((m) => [m.subject, m]));
      expect(bySubject['html only']).toMatchObject({ contentType: 'text/html' });
      expect(String(bySubject['html only']?.payload)).toContain('<b>world</b>');
      expect(String(bySubject.latin1?.payload).trim()).toBe('café crème');
      expect(bySubject['with attachment']?.attachments).toEqual([
        expect.objectContaining({ filename: 'data.bin', contentType: 'application/octet-stream' }),
      ]);
      // Postfix adds a Message-ID to mail that comes without one; either way the id is stable.
      expect(bySubject['no id']?.id).toMatch(/@/);
    } finally {
      await bus.close();
    }
  });
});
