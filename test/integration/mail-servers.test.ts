// Proof that the private mail-server harness works end to end: SMTP into Postfix, LMTP into
// Dovecot, +detail mailboxes, alias-map fan-out, extra users, and a Dovecot restart.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { connect } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ImapFlow } from 'imapflow';
import { afterAll, describe, expect, inject, it } from 'vitest';
import {
  addUser,
  MAIL_OWNER,
  serverLogs,
  setAliases,
  startMailServers,
  type MailServers,
  type MailServersInfo,
} from '../servers/mail-servers.js';

const info = inject('mailServers');
const clients: ImapFlow[] = [];
const cleanups: (() => void)[] = [];

afterAll(async () => {
  await Promise.all(clients.map((c) => c.logout().catch(() => c.close())));
  for (const cleanup of cleanups) cleanup();
});

async function login(
  server: MailServersInfo,
  user = server.user,
  pass = server.password,
): Promise<ImapFlow> {
  const client = new ImapFlow({
    host: server.host,
    port: server.imapPort,
    secure: false, // plain connection, upgraded by STARTTLS
    auth: { user, pass },
    tls: { ca: fs.readFileSync(server.caFile) },
    logger: false,
  });
  clients.push(client);
  await client.connect();
  expect(client.secureConnection).toBe(true); // STARTTLS happened, verified against the CA
  return client;
}

/** Waits until `mailbox` exists and holds `count` messages; returns their subjects. */
async function waitForMessages(
  client: ImapFlow,
  mailbox: string,
  count: number,
  server: MailServersInfo = info,
  timeoutMs = 15_000,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  let seen = -1;
  while (Date.now() < deadline) {
    try {
      const status = await client.status(mailbox, { messages: true });
      seen = status ? (status.messages ?? -1) : -1;
      if (seen >= count) break;
    } catch {
      // the mailbox is created by the first delivery
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (seen < count) {
    throw new Error(
      `mailbox ${mailbox} has ${seen} of ${count} messages after ${timeoutMs} ms\n` +
        serverLogs(server),
    );
  }
  const subjects: string[] = [];
  const lock = await client.getMailboxLock(mailbox, { readOnly: true });
  try {
    for await (const msg of client.fetch('1:*', { envelope: true })) {
      subjects.push(msg.envelope?.subject ?? '');
    }
  } finally {
    lock.release();
  }
  return subjects;
}

/** Whether nothing listens on 127.0.0.1:port any more. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(false);
    });
    sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

function unique(label: string): string {
  return `${label} ${randomBytes(6).toString('hex')}`;
}

function swaks(server: MailServersInfo, to: string, subject: string): void {
  const r = spawnSync(
    'swaks',
    [
      '--server',
      `${server.host}:${server.smtpPort}`,
      '--from',
      `harness@${server.domain}`,
      '--to',
      to,
      '--header',
      `Subject: ${subject}`,
      '--body',
      'sent by swaks',
      '--silent',
      '2',
    ],
    { encoding: 'utf8', timeout: 30_000 },
  );
  expect(r.error).toBeUndefined();
  expect(r.status, `swaks failed:\n${r.stdout}${r.stderr}`).toBe(0);
}

describe('private mail servers', () => {
  it('hands the test processes a complete, JSON-serialisable info object', () => {
    expect(JSON.parse(JSON.stringify(info))).toEqual(info);
    expect(info.host).toBe('127.0.0.1');
    expect(info.domain).toBe('queue.test');
    expect(info.user).toBe('mailbus');
    expect(new Set([info.imapPort, info.smtpPort, info.lmtpPort]).size).toBe(3);
    expect(fs.readFileSync(info.caFile, 'utf8')).toContain('BEGIN CERTIFICATE');
    expect(fs.statSync(path.join(info.maildir, 'new')).isDirectory()).toBe(true);
    for (const pid of [info.pids.dovecot, info.pids.postfix]) {
      expect(() => process.kill(pid, 0)).not.toThrow();
    }
  });

  it('delivers mail sent to mailbus+<detail> by swaks into mailbox <detail>', async () => {
    const subject = unique('harness swaks');
    swaks(info, `mailbus+harness-x.default@${info.domain}`, subject);
    const client = await login(info);
    expect(await waitForMessages(client, 'harness-x.default', 1)).toEqual([subject]);
    // Maildir++ with '.' separator: a child "default" of "harness-x"
    expect(fs.existsSync(path.join(info.maildir, '.harness-x.default', 'cur'))).toBe(true);
    const listed = (await client.list()).find((m) => m.path === 'harness-x.default');
    expect(listed?.delimiter).toBe('.');
    expect(client.capabilities.has('CONDSTORE')).toBe(true);
  });

  it('expands a list address from setAliases into every member mailbox (python smtplib)', async () => {
    const list = `harness-list@${info.domain}`;
    const members = ['a', 'b', 'c'].map((m) => `mailbus+harness-l.${m}@${info.domain}`);
    await setAliases(info, { [list]: members });
    expect(fs.readFileSync(info.aliasFile, 'utf8')).toContain(list);

    const subject = unique('harness list');
    const script = [
      'import smtplib, sys',
      'from email.message import EmailMessage',
      'host, port, sender, to, subject = sys.argv[1:6]',
      'm = EmailMessage()',
      "m['From'] = sender",
      "m['To'] = to",
      "m['Subject'] = subject",
      "m.set_content('sent by python smtplib')",
      'with smtplib.SMTP(host, int(port), timeout=20) as s:',
      '    s.send_message(m)',
    ].join('\n');
    const r = spawnSync(
      'python3',
      ['-c', script, info.host, String(info.smtpPort), `harness@${info.domain}`, list, subject],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(r.status, `python3 smtplib failed:\n${r.stdout}${r.stderr}`).toBe(0);

    const client = await login(info);
    for (const mailbox of ['harness-l.a', 'harness-l.b', 'harness-l.c']) {
      expect(await waitForMessages(client, mailbox, 1)).toEqual([subject]);
    }
  });

  it('adds a user whose hand-filled maildir Dovecot serves at once', async () => {
    const name = 'harness-user';
    const password = 'pw:with:colons and spaces';
    // under a 0700 mkdtemp directory, as test helpers make them: addUser makes it reachable
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'mailbus-harness-'));
    cleanups.push(() => fs.rmSync(parent, { recursive: true, force: true }));
    const maildir = path.join(parent, 'maildir');
    const subject = unique('harness by hand');
    // a Maildir++ mailbox "t1" with one message, written by this (root) process
    for (const sub of ['cur', 'new', 'tmp']) {
      fs.mkdirSync(path.join(maildir, '.t1', sub), { recursive: true });
    }
    const file = `${Math.floor(Date.now() / 1000)}.M1P${process.pid}.harness`;
    fs.writeFileSync(
      path.join(maildir, '.t1', 'new', file),
      `From: harness@${info.domain}\r\nTo: ${name}@${info.domain}\r\nSubject: ${subject}\r\n` +
        `Message-ID: <${randomBytes(8).toString('hex')}@${info.domain}>\r\n\r\nwritten by hand\r\n`,
    );

    await addUser(info, name, password, maildir);
    expect(fs.statSync(path.join(maildir, '.t1', 'new', file)).uid).toBe(MAIL_OWNER.uid);

    const client = await login(info, name, password);
    expect(await waitForMessages(client, 't1', 1)).toEqual([subject]);
    const inbox = await client.status('INBOX', { messages: true });
    expect(inbox && inbox.messages).toBe(0);

    // a wrong password is refused
    const wrong = new ImapFlow({
      host: info.host,
      port: info.imapPort,
      secure: false,
      auth: { user: name, pass: 'nope' },
      tls: { ca: fs.readFileSync(info.caFile) },
      logger: false,
    });
    await expect(wrong.connect()).rejects.toThrow();
    wrong.close();
  });

  describe('a private instance (as fault-injection tests would use)', () => {
    let own: MailServers | undefined;

    afterAll(async () => {
      await own?.stop();
      if (own) expect(fs.existsSync(own.info.dir)).toBe(false);
    });

    it('restarts only Dovecot on the same ports and data; Postfix queues meanwhile', async () => {
      own = await startMailServers();
      const server = own.info;
      expect(server.dir).not.toBe(info.dir);
      expect(server.imapPort).not.toBe(info.imapPort);

      const before = unique('before restart');
      swaks(server, `mailbus+harness-r.x@${server.domain}`, before);
      const first = await login(server);
      expect(await waitForMessages(first, 'harness-r.x', 1, server)).toEqual([before]);

      let firstClosed = false;
      first.on('close', () => (firstClosed = true));
      await own.stopDovecot();
      // Its clients were disconnected; the client may hear of it a moment after the stop.
      for (let waited = 0; !firstClosed && waited < 5000; waited += 20) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(firstClosed).toBe(true);
      expect(await refused(server.imapPort)).toBe(true);
      expect(await refused(server.lmtpPort)).toBe(true);
      const during = unique('while dovecot was down');
      swaks(server, `mailbus+harness-r.x@${server.domain}`, during); // Postfix defers it

      await own.startDovecot();
      const second = await login(server);
      const subjects = await waitForMessages(second, 'harness-r.x', 2, server);
      expect(subjects.sort()).toEqual([before, during].sort());

      // a crash (SIGKILL to every Dovecot process) and a start again
      await own.stopDovecot('crash');
      expect(await refused(server.imapPort)).toBe(true);
      await own.startDovecot();
      const third = await login(server);
      expect(await waitForMessages(third, 'harness-r.x', 2, server)).toHaveLength(2);

      const dir = server.dir;
      await own.stop();
      await own.stop(); // idempotent
      expect(fs.existsSync(dir)).toBe(false);
      for (const port of [server.imapPort, server.smtpPort, server.lmtpPort]) {
        expect(await refused(port)).toBe(true);
      }
    });
  });
});
