// A private Dovecot (IMAP + LMTP) and Postfix (SMTP) for the integration tests.
//
// startMailServers() installs the Debian packages if needed (install.sh), generates a
// self-contained configuration for both servers in a fresh temporary directory (on /dev/shm
// when it exists), starts both masters on free loopback ports and waits until they answer.
// Nothing of the machine's own mail setup is used or touched: no /etc/dovecot, no
// /etc/postfix/main.cf, no system daemons, no ports below 1024.
//
// Mail flow:  client --SMTP--> Postfix smtpd (smtpPort)
//               -> cleanup (virtual_alias_maps = texthash:aliasFile expands list addresses)
//               -> lmtp:inet:127.0.0.1:lmtpPort --LMTP--> Dovecot lmtp
//               -> user's Maildir++, mailbox = the address's +detail (autocreated)
//             client --IMAP (STARTTLS offered)--> Dovecot imap (imapPort)
//
// Everything a test needs is in MailServersInfo, a plain JSON object that the global setup
// hands to the test processes (vitest provide/inject). The functions that take an info object
// (addUser, setAliases, stopDovecot, startDovecot, ...) work from any process on this machine;
// the MailServers class is the owner's handle and adds stop().
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { connect, createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

/**
 * How Dovecot stores a user's mail: `maildir` (files other tools can read) or `sdbox`
 * (Dovecot's own one file per message, with the flags in its index only).
 */
export type MailFormat = 'maildir' | 'sdbox';

export interface MailServersInfo {
  /** The private temp directory (under /dev/shm when it exists, for speed). */
  dir: string;
  host: '127.0.0.1';
  /** Dovecot IMAP: STARTTLS offered (not required), cert signed by caFile. */
  imapPort: number;
  /** Postfix smtpd accepting mail for `domain` from loopback, no auth, no TLS. */
  smtpPort: number;
  /** Dovecot LMTP (Postfix delivers here). */
  lmtpPort: number;
  /** 'queue.test' */
  domain: string;
  /** PEM file of the private test CA that signed the server cert (SAN 127.0.0.1, localhost). */
  caFile: string;
  /** 'mailbus', the queue account. */
  user: string;
  password: string;
  /** The queue account's Maildir++ root (Dovecot mail_location = maildir:<this>). */
  maildir: string;
  /** Postfix virtual alias map (texthash), written by setAliases. */
  aliasFile: string;
  /** Master pids at start (the pid files are the authority after a restart). */
  pids: { dovecot: number; postfix: number };
}

const HOST = '127.0.0.1' as const;
const DOMAIN = 'queue.test';
const QUEUE_USER = 'mailbus';
const DIR_PREFIX = 'mailbus-test-';

const DOVECOT_BIN = '/usr/sbin/dovecot';
const DOVECOT_LIBEXEC = '/usr/lib/dovecot';
const POSTFIX_MASTER = '/usr/lib/postfix/sbin/master';
const DOVECOT_DH = '/usr/share/dovecot/dh.pem';
const INSTALL_SCRIPT = installScript();

/**
 * The install script beside this module, or in the sources when this module was compiled into
 * another folder (the benchmarks run it from dist-bench/test/servers/, where tsc copies no
 * shell script).
 */
function installScript(): string {
  const beside = fileURLToPath(new URL('./install.sh', import.meta.url));
  const inSources = fileURLToPath(new URL('../../../test/servers/install.sh', import.meta.url));
  return fs.existsSync(beside) || !fs.existsSync(inSources) ? beside : inSources;
}

/**
 * The owner of all mail that Dovecot serves. Dovecot 2.3 will not run imap/lmtp for uid 0, so
 * this is a fixed unprivileged uid/gid (the usual "vmail" numbers; no /etc/passwd entry needed).
 */
export const MAIL_OWNER: { readonly uid: number; readonly gid: number } = Object.freeze({
  uid: 5000,
  gid: 5000,
});

const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
/** A master that has not exited this long after SIGTERM is waiting for a stuck child. */
const MASTER_GRACE_MS = 2500;
/** How long children may outlive their master before they are killed. */
const CHILD_GRACE_MS = 1500;
const RELOAD_TIMEOUT_MS = 15_000;
/** Generated files get this old an mtime: Postfix re-reads files younger than ~1 s. */
const OLD_MTIME_S = 3600;

// ---------------------------------------------------------------------------------------------
// Layout of the private directory (everything is derived from info.dir, so any process that
// has the info object can find it).

interface Layout {
  dir: string;
  owner: string;
  tls: string;
  caKey: string;
  caCert: string;
  serverKey: string;
  serverCert: string;
  dovecot: string;
  dovecotConf: string;
  dovecotLog: string;
  dovecotOut: string;
  dovecotBase: string;
  dovecotState: string;
  dovecotPid: string;
  users: string;
  homes: string;
  mail: string;
  postfix: string;
  postfixEtc: string;
  mainCf: string;
  masterCf: string;
  aliasFile: string;
  aliasLock: string;
  postfixQueue: string;
  postfixData: string;
  postfixLog: string;
  postfixOut: string;
  postfixPid: string;
}

function layout(dir: string): Layout {
  const j = (...parts: string[]): string => path.join(dir, ...parts);
  return {
    dir,
    owner: j('owner.pid'),
    tls: j('tls'),
    caKey: j('tls', 'ca.key'),
    caCert: j('tls', 'ca.pem'),
    serverKey: j('tls', 'server.key'),
    serverCert: j('tls', 'server.pem'),
    dovecot: j('dovecot'),
    dovecotConf: j('dovecot', 'dovecot.conf'),
    dovecotLog: j('dovecot', 'dovecot.log'),
    dovecotOut: j('dovecot', 'master.out'),
    dovecotBase: j('dovecot', 'run'),
    dovecotState: j('dovecot', 'state'),
    dovecotPid: j('dovecot', 'run', 'master.pid'),
    users: j('dovecot', 'users'),
    homes: j('home'),
    mail: j('mail'),
    postfix: j('postfix'),
    postfixEtc: j('postfix', 'etc'),
    mainCf: j('postfix', 'etc', 'main.cf'),
    masterCf: j('postfix', 'etc', 'master.cf'),
    aliasFile: j('postfix', 'etc', 'virtual_aliases'),
    aliasLock: j('postfix', 'etc', 'virtual_aliases.lock'),
    postfixQueue: j('postfix', 'queue'),
    postfixData: j('postfix', 'data'),
    postfixLog: j('postfix', 'maillog'),
    postfixOut: j('postfix', 'master.out'),
    postfixPid: j('postfix', 'queue', 'pid', 'master.pid'),
  };
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function fail(message: string, logs: string[] = []): never {
  const tails = logs
    .map((file) => {
      const tail = tailOf(file);
      return tail ? `\n--- last lines of ${file} ---\n${tail}` : '';
    })
    .join('');
  throw new Error(`mail servers: ${message}${tails}`);
}

function tailOf(file: string, lines = 30): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Writes a file atomically (temp + rename) with an mtime OLD_MTIME_S in the past. */
function writeFileOld(file: string, content: string, mode = 0o644, mtime?: number): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, content, { mode });
  fs.chmodSync(tmp, mode); // umask-proof
  const t = mtime ?? Math.floor(Date.now() / 1000) - OLD_MTIME_S;
  fs.utimesSync(tmp, t, t);
  fs.renameSync(tmp, file);
}

function run(cmd: string, args: string[], what: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) fail(`${what}: cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    fail(
      `${what}: ${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}:\n${r.stderr}${r.stdout}`,
    );
  }
  return r.stdout;
}

interface Account {
  uid: number;
  gid: number;
}

function lookupUser(name: string): Account {
  const r = spawnSync('getent', ['passwd', name], { encoding: 'utf8' });
  const fields = r.status === 0 ? r.stdout.trim().split(':') : [];
  if (fields.length < 4) {
    fail(`system user '${name}' does not exist (is its package installed? see ${INSTALL_SCRIPT})`);
  }
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

function lookupGroup(name: string): number {
  const r = spawnSync('getent', ['group', name], { encoding: 'utf8' });
  const fields = r.status === 0 ? r.stdout.trim().split(':') : [];
  if (fields.length < 3) fail(`system group '${name}' does not exist`);
  return Number(fields[2]);
}

function mkdir(dir: string, mode: number, uid = -1, gid = -1): void {
  fs.mkdirSync(dir, { recursive: true, mode });
  fs.chmodSync(dir, mode);
  if (uid !== -1 || gid !== -1) fs.chownSync(dir, uid, gid);
}

/** A free TCP port on 127.0.0.1: bind port 0, read it, close. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no port from listen(0)'))));
    });
  });
}

async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (pid 1 here may not reap re-parented daemons). */
function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

interface ProcessEntry {
  ppid: number;
  pgrp: number;
  comm: string;
}

/** Every process, from /proc: parent, process group, command name. */
function processTable(): Map<number, ProcessEntry> {
  const table = new Map<number, ProcessEntry>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const fields = stat.slice(close + 2).split(' '); // state ppid pgrp session ...
      table.set(Number(entry), { ppid: Number(fields[1]), pgrp: Number(fields[2]), comm });
    } catch {
      // the process went away while we were looking
    }
  }
  return table;
}

/**
 * The processes of a master: its descendants and the members of its process group (both
 * masters are session leaders, and children that outlive the master keep its group).
 */
function family(pid: number): number[] {
  const table = processTable();
  const out = new Set<number>();
  for (const [p, { pgrp }] of table) if (pgrp === pid && p !== pid) out.add(p);
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift() as number;
    for (const [child, { ppid }] of table) {
      if (ppid === parent && !out.has(child)) {
        out.add(child);
        queue.push(child);
      }
    }
  }
  return [...out];
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = pids.filter(isAlive);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(20);
    left = left.filter(isAlive);
  }
  return left;
}

/** How a server is stopped: `graceful` = SIGTERM; `crash` = SIGKILL to it and all its children. */
export type StopMode = 'graceful' | 'crash';

/**
 * Stops the master whose pid is in pidFile, if it is running and really is ours (its command
 * line names our config). Graceful: SIGTERM the master and wait for it; then SIGTERM whatever
 * children outlived it (Dovecot's master leaves processes that still serve a client running,
 * and their listening sockets with them), wait a moment, SIGKILL the rest.
 */
async function stopMaster(
  pidFile: string,
  marker: string,
  what: string,
  mode: StopMode = 'graceful',
): Promise<void> {
  const pid = readPid(pidFile);
  if (pid === undefined || !isAlive(pid)) return;
  if (!cmdline(pid).includes(marker)) return; // a stale pid file; the pid is someone else's now
  const children = family(pid);
  if (mode === 'crash') {
    for (const p of [pid, ...children]) signal(p, 'SIGKILL');
  } else {
    signal(pid, 'SIGTERM');
    if ((await waitGone([pid], MASTER_GRACE_MS)).length > 0) {
      // a child stuck in a blocking wait keeps the master waiting for it: kill the children
      for (const p of family(pid)) signal(p, 'SIGKILL');
      if ((await waitGone([pid], STOP_TIMEOUT_MS)).length > 0) {
        console.warn(`mail servers: ${what} master ${pid} ignored SIGTERM, killing it`);
        signal(pid, 'SIGKILL');
      }
    }
    // what outlived the master, including children started after the first look
    const orphans = [...new Set([...children, ...family(pid)])].filter(isAlive);
    for (const p of orphans) signal(p, 'SIGTERM');
    children.push(...orphans.filter((p) => !children.includes(p)));
  }
  let left = await waitGone([pid, ...children], CHILD_GRACE_MS);
  if (left.length > 0) {
    for (const p of left) signal(p, 'SIGKILL');
    left = await waitGone(left, 2000);
    if (left.length > 0) fail(`${what}: processes ${left.join(', ')} survived SIGKILL`);
  }
}

/** Connects until the server's greeting starts with `prefix`. */
async function waitForGreeting(
  port: number,
  prefix: string,
  what: string,
  masterPidFile: string,
  logs: string[],
): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    const result = await new Promise<string>((resolve) => {
      const sock = connect({ host: HOST, port });
      let buf = '';
      const done = (value: string): void => {
        sock.destroy();
        resolve(value);
      };
      sock.setTimeout(2000, () => done('timeout waiting for the greeting'));
      sock.on('error', (e) => done(e.message));
      sock.on('data', (d) => {
        buf += d.toString('latin1');
        if (buf.includes('\n')) done(buf.startsWith(prefix) ? 'ok' : `greeting ${buf.trim()}`);
      });
      sock.on('end', () => done(`closed after ${JSON.stringify(buf)}`));
    });
    if (result === 'ok') return;
    last = result;
    const pid = readPid(masterPidFile);
    if (pid !== undefined && !isAlive(pid)) fail(`${what}: master (pid ${pid}) died`, logs);
    await sleep(25);
  }
  fail(`${what} did not answer on ${HOST}:${port} within ${START_TIMEOUT_MS} ms (${last})`, logs);
}

async function waitForPidFile(file: string, what: string, logs: string[]): Promise<number> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const pid = readPid(file);
    if (pid !== undefined && isAlive(pid)) return pid;
    if (Date.now() > deadline) fail(`${what}: no live pid in ${file}`, logs);
    await sleep(10);
  }
}

/** A lock file created with O_EXCL, holding the owner's pid; stale locks are broken. */
async function withLock<T>(lockFile: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      fs.writeFileSync(lockFile, String(process.pid), { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = readPid(lockFile);
      if (holder !== undefined && !isAlive(holder)) {
        fs.rmSync(lockFile, { force: true });
        continue;
      }
      if (Date.now() > deadline) fail(`lock ${lockFile} held by pid ${holder} for 30 s`);
      await sleep(10);
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockFile, { force: true });
  }
}

function tempBase(): string {
  try {
    if (fs.statSync('/dev/shm').isDirectory()) {
      fs.accessSync('/dev/shm', fs.constants.W_OK);
      return '/dev/shm';
    }
  } catch {
    // no /dev/shm here
  }
  return os.tmpdir();
}

// ---------------------------------------------------------------------------------------------
// Install check

function install(): void {
  const r = spawnSync('bash', [INSTALL_SCRIPT], { stdio: 'inherit' });
  if (r.error) fail(`cannot run ${INSTALL_SCRIPT}: ${r.error.message}`);
  if (r.status !== 0) fail(`${INSTALL_SCRIPT} failed (exit ${r.status ?? r.signal}); see above`);
  const needed = [
    DOVECOT_BIN,
    path.join(DOVECOT_LIBEXEC, 'imap'),
    path.join(DOVECOT_LIBEXEC, 'lmtp'),
    POSTFIX_MASTER,
  ];
  const missing = needed.filter((f) => !fs.existsSync(f));
  if (missing.length > 0) fail(`missing after ${INSTALL_SCRIPT}: ${missing.join(', ')}`);
}

// ---------------------------------------------------------------------------------------------
// TLS: a private CA and a server certificate for 127.0.0.1 / localhost

function makeCertificates(l: Layout): void {
  mkdir(l.tls, 0o755);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run(
    'openssl',
    [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      l.caKey,
      '-out',
      l.caCert,
      '-days',
      '30',
      '-subj',
      '/CN=mailbus test CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    'creating the test CA',
  );
  const csr = path.join(l.tls, 'server.csr');
  run(
    'openssl',
    ['req', '-new', ...ec, '-keyout', l.serverKey, '-out', csr, '-subj', '/CN=127.0.0.1'],
    'creating the server key',
  );
  const ext = path.join(l.tls, 'server.ext');
  fs.writeFileSync(
    ext,
    [
      'subjectAltName = IP:127.0.0.1, DNS:localhost',
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature, keyEncipherment',
      'extendedKeyUsage = serverAuth',
      '',
    ].join('\n'),
  );
  run(
    'openssl',
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      l.caCert,
      '-CAkey',
      l.caKey,
      '-CAcreateserial',
      '-out',
      l.serverCert,
      '-days',
      '30',
      '-extfile',
      ext,
    ],
    'signing the server certificate',
  );
  fs.chmodSync(l.caCert, 0o644);
  fs.chmodSync(l.serverCert, 0o644);
  fs.chmodSync(l.serverKey, 0o600);
  fs.chmodSync(l.caKey, 0o600);
}

// ---------------------------------------------------------------------------------------------
// Dovecot

function dovecotConfig(l: Layout, imapPort: number, lmtpPort: number, id: string): string {
  const dh = fs.existsSync(DOVECOT_DH) ? `ssl_dh = <${DOVECOT_DH}` : '# no ssl_dh file here';
  return `# Generated by mailbus test/servers/mail-servers.ts: a private, self-contained Dovecot.
instance_name = mailbus-test-${id}
base_dir = ${l.dovecotBase}
state_dir = ${l.dovecotState}
log_path = ${l.dovecotLog}
info_log_path = ${l.dovecotLog}
debug_log_path = ${l.dovecotLog}
log_timestamp = "%Y-%m-%d %H:%M:%S "
protocols = imap lmtp
listen = ${HOST}
hostname = mx.${DOMAIN}
postmaster_address = postmaster@${DOMAIN}
shutdown_clients = yes
# No stats-writer connections: a process starting up while Dovecot stops would otherwise wait
# 5 s for the stats handshake (and hold up the master's exit).
stats_writer_socket_path =

# TLS: STARTTLS is offered (imapflow upgrades automatically; give it tls.ca = caFile).
ssl = yes
ssl_cert = <${l.serverCert}
ssl_key = <${l.serverKey}
${dh}
ssl_min_protocol = TLSv1.2

# Authentication: PLAIN and LOGIN, allowed with or without TLS (loopback-only test server).
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Lu
auth_failure_delay = 0
auth_verbose = yes

# One passwd-file per user (users/<name>), so adding a user never rewrites a file that
# Dovecot has cached; its extra field userdb_mail gives each user its own mail root (and format).
passdb {
  driver = passwd-file
  args = username_format=%n ${l.users}/%n
}
userdb {
  driver = passwd-file
  args = username_format=%n ${l.users}/%n
}

# Mail runs as uid/gid ${MAIL_OWNER.uid}:${MAIL_OWNER.gid} (no system user needed). Dovecot 2.3 refuses mail
# access as root ("Mail access not allowed for root"), so maildirs are handed over to this uid
# (addUser chowns them; see chownForDovecot for files a root process adds later).
first_valid_uid = ${MAIL_OWNER.uid}
last_valid_uid = ${MAIL_OWNER.uid}
first_valid_gid = ${MAIL_OWNER.gid}
last_valid_gid = ${MAIL_OWNER.gid}
mail_location = maildir:~/Maildir
mail_attribute_dict = file:%h/dovecot-attributes

# Maildir++ layout, '.' separator, no prefix: mailbox "orders.default" is <maildir>/.orders.default
namespace inbox {
  inbox = yes
  separator = .
  prefix =
}

protocol imap {
  mail_max_userip_connections = 1000
  imap_max_line_length = 10M
  imap_metadata = yes
}

# LMTP: mailbus+orders.default@queue.test -> user mailbus, mailbox orders.default (autocreated)
recipient_delimiter = +
lmtp_save_to_detail_mailbox = yes
lda_mailbox_autocreate = yes
lda_mailbox_autosubscribe = yes

default_process_limit = 1000
default_client_limit = 10000
default_vsz_limit = 1G

service imap-login {
  inet_listener imap {
    address = ${HOST}
    port = ${imapPort}
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = 2
  client_limit = 2000
}
service imap {
  process_limit = 1000
}
service lmtp {
  inet_listener lmtp {
    address = ${HOST}
    port = ${lmtpPort}
  }
  unix_listener lmtp {
    mode = 0600
  }
  process_min_avail = 1
}
# No auth penalty: after a failed login Dovecot would delay every further login attempt from
# 127.0.0.1 by up to 15 s, and all the tests share that address. Without this anvil socket the
# penalty is off (auth logs one "net_connect_unix(anvil-auth-penalty) failed" at start).
service anvil {
  client_limit = 10000
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  client_limit = 10000
}
`;
}

function dovecotLogs(l: Layout): string[] {
  return [l.dovecotOut, l.dovecotLog];
}

async function launchDovecot(l: Layout, imapPort: number, lmtpPort: number): Promise<number> {
  if (!fs.existsSync(l.dovecotConf)) fail(`no Dovecot config at ${l.dovecotConf}`);
  const running = readPid(l.dovecotPid);
  if (running !== undefined && isAlive(running) && cmdline(running).includes(l.dovecotConf)) {
    fail(`Dovecot of ${l.dir} is already running (pid ${running})`);
  }
  // A killed master may linger as a zombie for a while (pid 1 reaps late here), and Dovecot
  // takes a live-looking pid in its pid file for a running instance.
  fs.rmSync(l.dovecotPid, { force: true });
  // The master keeps the stderr it was started with for its whole life: give it a file.
  const out = fs.openSync(l.dovecotOut, 'a');
  try {
    const r = spawnSync(DOVECOT_BIN, ['-c', l.dovecotConf], {
      stdio: ['ignore', out, out],
      timeout: START_TIMEOUT_MS,
    });
    if (r.error) fail(`cannot run ${DOVECOT_BIN}: ${r.error.message}`, dovecotLogs(l));
    if (r.status !== 0) fail(`${DOVECOT_BIN} exited ${r.status ?? r.signal}`, dovecotLogs(l));
  } finally {
    fs.closeSync(out);
  }
  const pid = await waitForPidFile(l.dovecotPid, 'Dovecot', dovecotLogs(l));
  await waitForGreeting(imapPort, '* OK', 'Dovecot IMAP', l.dovecotPid, dovecotLogs(l));
  await waitForGreeting(lmtpPort, '220 ', 'Dovecot LMTP', l.dovecotPid, dovecotLogs(l));
  return pid;
}

function portsOf(info: MailServersInfo): [number, number] {
  return [info.imapPort, info.lmtpPort];
}

// ---------------------------------------------------------------------------------------------
// Postfix

function postfixMainCf(l: Layout, smtpPort: number, lmtpPort: number): string {
  return `# Generated by mailbus test/servers/mail-servers.ts: a private, self-contained Postfix.
compatibility_level = 3.6
queue_directory = ${l.postfixQueue}
data_directory = ${l.postfixData}
mail_owner = postfix
setgid_group = postdrop
syslog_name = mailbus-test-postfix
maillog_file = ${l.postfixLog}
maillog_file_prefixes = ${l.dir}

myhostname = mx.${DOMAIN}
mydomain = ${DOMAIN}
myorigin = $mydomain
inet_interfaces = ${HOST}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled in the mailbus test harness
default_transport = error:5.7.1 outbound mail is disabled in the mailbus test harness
relay_transport = $default_transport
biff = no
append_dot_mydomain = no
readme_directory = no

# The queue domain: every address is delivered over LMTP to the private Dovecot, which
# knows the users; list addresses are expanded by the alias map first.
virtual_mailbox_domains = ${DOMAIN}
virtual_transport = lmtp:inet:${HOST}:${lmtpPort}
virtual_alias_maps = texthash:${l.aliasFile}
recipient_delimiter = +
smtpd_reject_unlisted_recipient = no

# Only loopback clients, only the queue domain, no auth, no TLS.
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_tls_security_level = none
smtp_tls_security_level = none
lmtp_tls_security_level = none
smtputf8_enable = no
smtpd_peername_lookup = no

# No DNS at all.
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native

# Sizes: 25 MB messages and more (base64 grows them by a third).
message_size_limit = 104857600
mailbox_size_limit = 0
virtual_mailbox_limit = 0

# Speed: no inflow throttling, quick retries after Dovecot was down (fault injection).
in_flow_delay = 0s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
delay_warning_time = 0h
default_process_limit = 200
`;
}

function postfixMasterCf(smtpPort: number): string {
  // service, type, private, unpriv, chroot, wakeup, maxproc, command (no chroot anywhere)
  const rows: string[][] = [
    [`${HOST}:${smtpPort}`, 'inet', 'n', '-', 'n', '-', '-', 'smtpd'],
    ['pickup', 'unix', 'n', '-', 'n', '60', '1', 'pickup'],
    ['cleanup', 'unix', 'n', '-', 'n', '-', '0', 'cleanup'],
    ['qmgr', 'unix', 'n', '-', 'n', '300', '1', 'qmgr'],
    ['rewrite', 'unix', '-', '-', 'n', '-', '-', 'trivial-rewrite'],
    ['bounce', 'unix', '-', '-', 'n', '-', '0', 'bounce'],
    ['defer', 'unix', '-', '-', 'n', '-', '0', 'bounce'],
    ['trace', 'unix', '-', '-', 'n', '-', '0', 'bounce'],
    ['verify', 'unix', '-', '-', 'n', '-', '1', 'verify'],
    ['flush', 'unix', 'n', '-', 'n', '1000?', '0', 'flush'],
    ['proxymap', 'unix', '-', '-', 'n', '-', '-', 'proxymap'],
    ['proxywrite', 'unix', '-', '-', 'n', '-', '1', 'proxymap'],
    ['smtp', 'unix', '-', '-', 'n', '-', '-', 'smtp'],
    ['relay', 'unix', '-', '-', 'n', '-', '-', 'smtp'],
    ['showq', 'unix', 'n', '-', 'n', '-', '-', 'showq'],
    ['error', 'unix', '-', '-', 'n', '-', '-', 'error'],
    ['retry', 'unix', '-', '-', 'n', '-', '-', 'error'],
    ['discard', 'unix', '-', '-', 'n', '-', '-', 'discard'],
    ['lmtp', 'unix', '-', '-', 'n', '-', '-', 'lmtp'],
    ['anvil', 'unix', '-', '-', 'n', '-', '1', 'anvil'],
    ['scache', 'unix', '-', '-', 'n', '-', '1', 'scache'],
    ['postlog', 'unix-dgram', 'n', '-', 'n', '-', '1', 'postlogd'],
  ];
  const widths = [20, 11, 8, 8, 8, 8, 8];
  const lines = rows.map((row) =>
    row.map((cell, i) => (i < widths.length ? cell.padEnd(widths[i] ?? 8) : cell)).join(''),
  );
  return `# Generated by mailbus test/servers/mail-servers.ts\n${lines.join('\n')}\n`;
}

function postfixLogs(l: Layout): string[] {
  return [l.postfixOut, l.postfixLog];
}

/** Creates the queue directory tree the way postfix-files wants it. */
function makePostfixQueue(l: Layout): void {
  const owner = lookupUser('postfix');
  const postdrop = lookupGroup('postdrop');
  mkdir(l.postfixQueue, 0o755, 0, 0);
  for (const sub of [
    'active',
    'bounce',
    'corrupt',
    'defer',
    'deferred',
    'flush',
    'hold',
    'incoming',
    'private',
    'saved',
    'trace',
  ]) {
    mkdir(path.join(l.postfixQueue, sub), 0o700, owner.uid, -1);
  }
  mkdir(path.join(l.postfixQueue, 'maildrop'), 0o730, owner.uid, postdrop);
  mkdir(path.join(l.postfixQueue, 'public'), 0o710, owner.uid, postdrop);
  mkdir(path.join(l.postfixQueue, 'pid'), 0o755, 0, 0);
  mkdir(l.postfixData, 0o700, owner.uid, -1);
}

async function launchPostfix(l: Layout, smtpPort: number): Promise<number> {
  const running = readPid(l.postfixPid);
  if (running !== undefined && isAlive(running) && cmdline(running).includes(l.postfixEtc)) {
    fail(`Postfix of ${l.dir} is already running (pid ${running})`);
  }
  fs.rmSync(l.postfixPid, { force: true });
  const out = fs.openSync(l.postfixOut, 'a');
  try {
    // -w: the foreground process exits 0 only once the daemon has initialised.
    const r = spawnSync(POSTFIX_MASTER, ['-c', l.postfixEtc, '-w'], {
      stdio: ['ignore', out, out],
      timeout: START_TIMEOUT_MS,
    });
    if (r.error) fail(`cannot run ${POSTFIX_MASTER}: ${r.error.message}`, postfixLogs(l));
    if (r.status !== 0) fail(`${POSTFIX_MASTER} exited ${r.status ?? r.signal}`, postfixLogs(l));
  } finally {
    fs.closeSync(out);
  }
  const pid = await waitForPidFile(l.postfixPid, 'Postfix', postfixLogs(l));
  await waitForGreeting(smtpPort, '220 ', 'Postfix SMTP', l.postfixPid, postfixLogs(l));
  return pid;
}

// ---------------------------------------------------------------------------------------------
// Users and aliases (usable from any process that has the info object)

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const ADDRESS_RE = /^[^\s,:@"<>()\\]+@[a-z0-9.-]+$/i;

function passwdLine(
  l: Layout,
  name: string,
  password: string,
  mail: { root: string; format: MailFormat },
): string {
  const home = path.join(l.homes, name);
  // base64 so that any password (colons included) fits the colon-separated line
  const pass = `{PLAIN.BASE64}${Buffer.from(password, 'utf8').toString('base64')}`;
  const { uid, gid } = MAIL_OWNER;
  return `${name}:${pass}:${uid}:${gid}::${home}::userdb_mail=${mail.format}:${mail.root}\n`;
}

/**
 * Hands a file or directory tree to the uid Dovecot serves mail as (MAIL_OWNER). Call it on
 * anything a root process creates inside a maildir that Dovecot serves (a new mailbox
 * directory, say): Dovecot must be able to create cur/, tmp/ and its index files there and
 * to rename and unlink messages. addUser does this for the whole maildir.
 */
export function chownForDovecot(target: string): void {
  const { uid, gid } = MAIL_OWNER;
  const visit = (p: string): void => {
    const st = fs.lstatSync(p);
    if (st.isSymbolicLink()) return;
    fs.chownSync(p, uid, gid);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) visit(path.join(p, e));
  };
  visit(target);
}

/**
 * Makes sure the mail uid can reach `dir`: a parent without search permission for it (a
 * mkdtemp directory is 0700) gets o+x (search only, no listing) when it belongs to us; any
 * other unreachable parent is a clear error.
 */
function makeReachable(dir: string, what: string): void {
  const me = process.getuid?.() ?? 0;
  for (let p = path.dirname(dir); ; p = path.dirname(p)) {
    const st = fs.statSync(p);
    const ok = st.uid === MAIL_OWNER.uid ? st.mode & 0o100 : st.mode & 0o001;
    if (!ok) {
      if (st.uid !== me) {
        fail(
          `${what}: ${dir} is not reachable by Dovecot's mail uid ${MAIL_OWNER.uid}: ${p} has ` +
            `mode ${(st.mode & 0o777).toString(8)} (make it o+x, or put maildirs under info.dir)`,
        );
      }
      fs.chmodSync(p, (st.mode & 0o7777) | 0o001);
    }
    if (p === path.dirname(p)) return;
  }
}

function writeUser(
  l: Layout,
  name: string,
  password: string,
  maildir: string,
  format: MailFormat,
): boolean {
  if (!NAME_RE.test(name)) {
    fail(`addUser: user name ${JSON.stringify(name)} must match ${NAME_RE} (lower case)`);
  }
  if (!path.isAbsolute(maildir) || /[\s:]/.test(maildir)) {
    fail(`addUser: maildir must be an absolute path without spaces or colons: ${maildir}`);
  }
  const home = path.join(l.homes, name);
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  for (const sub of format === 'maildir' ? ['cur', 'new', 'tmp'] : ['']) {
    fs.mkdirSync(path.join(maildir, sub), { recursive: true, mode: 0o700 });
  }
  makeReachable(maildir, 'addUser');
  chownForDovecot(home);
  chownForDovecot(maildir);
  const file = path.join(l.users, name);
  let previous: fs.Stats | undefined;
  try {
    previous = fs.statSync(file);
  } catch {
    previous = undefined;
  }
  // Dovecot re-reads a passwd-file when its mtime or size changed, at most once a second:
  // a rewritten file gets an mtime it has not had before.
  const mtime = previous ? Math.floor(previous.mtimeMs / 1000) + 1 : undefined;
  writeFileOld(file, passwdLine(l, name, password, { root: maildir, format }), 0o640, mtime);
  return previous !== undefined;
}

/**
 * Adds (or replaces) a Dovecot user whose mail lives in `maildir` (Maildir++, '.' separator;
 * created if missing), stored as `format` (the folder is then the root of that format's
 * files). The folder, with whatever is already in it, is chowned to MAIL_OWNER,
 * and parents of it that we own but that MAIL_OWNER could not pass through get o+x.
 * The user can log in (and receive mail at name@queue.test) as soon as this returns: no
 * restart, no reload.
 */
export async function addUser(
  info: MailServersInfo,
  name: string,
  password: string,
  maildir: string,
  format: MailFormat = 'maildir',
): Promise<void> {
  const replaced = writeUser(layout(info.dir), name, password, maildir, format);
  // A replaced user's file may have been read by Dovecot in this very second, and it looks
  // at a file at most once a second.
  if (replaced) await sleep(1100);
}

function aliasMapText(map: Map<string, string[]>): string {
  const lines = ['# Generated by mailbus test/servers/mail-servers.ts (setAliases)'];
  for (const [list, targets] of [...map].sort(([a], [b]) => a.localeCompare(b))) {
    lines.push(`${list}\t${targets.join(', ')}`);
  }
  return `${lines.join('\n')}\n`;
}

function parseAliasMap(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    if (!line.trim() || line.startsWith('#')) continue;
    const [key, rest = ''] = line.split('\t');
    if (!key) continue;
    map.set(
      key,
      rest
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    );
  }
  return map;
}

function childrenNamed(masterPid: number, names: string[]): number[] {
  const out: number[] = [];
  for (const [pid, { ppid, comm }] of processTable()) {
    if (ppid === masterPid && names.includes(comm)) out.push(pid);
  }
  return out;
}

/**
 * Reloads Postfix (SIGHUP to its master) and returns once no process that may have read the
 * old alias map is left: texthash maps are read when a cleanup(8) process starts, and
 * cleanup is where virtual aliases are expanded. Every cleanup alive before the HUP was
 * started before the map was rewritten (or read it afterwards); after the reload the master
 * retires them all and starts new ones on demand.
 */
async function reloadPostfix(l: Layout): Promise<void> {
  const pid = readPid(l.postfixPid);
  if (pid === undefined || !isAlive(pid))
    fail('setAliases: Postfix is not running', postfixLogs(l));
  const before = childrenNamed(pid, ['cleanup']);
  const logSize = fs.existsSync(l.postfixLog) ? fs.statSync(l.postfixLog).size : 0;
  signal(pid, 'SIGHUP');
  const deadline = Date.now() + RELOAD_TIMEOUT_MS;
  // 1. the master has taken the reload (it logs "reload -- version ...")
  for (;;) {
    const log = readFrom(l.postfixLog, logSize);
    if (/master\[\d+\]: reload /.test(log)) break;
    if (Date.now() > deadline) fail('setAliases: Postfix did not log its reload', postfixLogs(l));
    await sleep(10);
  }
  // 2. the old cleanup processes are gone
  const left = await waitGone(before, Math.max(0, deadline - Date.now()));
  if (left.length > 0) {
    fail(`setAliases: cleanup processes ${left.join(', ')} outlived the reload`, postfixLogs(l));
  }
}

function readFrom(file: string, offset: number): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= offset) return '';
      const buf = Buffer.alloc(size - offset);
      fs.readSync(fd, buf, 0, buf.length, offset);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

/**
 * Sets Postfix virtual aliases (list address -> recipient addresses) and reloads Postfix;
 * mail sent after this returns is expanded with the new map. Entries for the given list
 * addresses are replaced (an empty array removes one); other entries are kept, so test files
 * running side by side do not undo each other's lists.
 */
export async function setAliases(
  info: MailServersInfo,
  aliases: Record<string, string[]>,
): Promise<void> {
  const l = layout(info.dir);
  for (const [list, targets] of Object.entries(aliases)) {
    for (const address of [list, ...targets]) {
      if (!ADDRESS_RE.test(address)) fail(`setAliases: not a plain address: ${address}`);
    }
  }
  await withLock(l.aliasLock, async () => {
    const current = fs.existsSync(l.aliasFile)
      ? parseAliasMap(fs.readFileSync(l.aliasFile, 'utf8'))
      : new Map<string, string[]>();
    for (const [list, targets] of Object.entries(aliases)) {
      const key = list.toLowerCase();
      if (targets.length === 0) current.delete(key);
      else current.set(key, targets);
    }
    writeFileOld(l.aliasFile, aliasMapText(current));
    await reloadPostfix(l);
  });
}

// ---------------------------------------------------------------------------------------------
// Dovecot stop/start from any process (fault injection)

/**
 * Stops only Dovecot and waits until none of its processes is left: its clients are
 * disconnected and its ports are closed. `crash` kills it with SIGKILL instead.
 */
export async function stopDovecot(info: MailServersInfo, mode?: StopMode): Promise<void> {
  const l = layout(info.dir);
  await stopMaster(l.dovecotPid, l.dovecotConf, 'Dovecot', mode);
}

/** Starts Dovecot again on the same ports, with the same config, users and mail. */
export async function startDovecot(info: MailServersInfo): Promise<number> {
  const [imapPort, lmtpPort] = portsOf(info);
  return launchDovecot(layout(info.dir), imapPort, lmtpPort);
}

/** Stops only Postfix (mail it has queued stays queued for startPostfix). */
export async function stopPostfix(info: MailServersInfo, mode?: StopMode): Promise<void> {
  const l = layout(info.dir);
  await stopMaster(l.postfixPid, l.postfixEtc, 'Postfix', mode);
}

/** Starts Postfix again on the same port and queue. */
export async function startPostfix(info: MailServersInfo): Promise<number> {
  return launchPostfix(layout(info.dir), info.smtpPort);
}

/** The last lines of Dovecot's and Postfix's logs, for test failure messages. */
export function serverLogs(info: MailServersInfo, lines = 40): string {
  const l = layout(info.dir);
  return [l.dovecotLog, l.postfixLog].map((f) => `--- ${f} ---\n${tailOf(f, lines)}`).join('\n');
}

// ---------------------------------------------------------------------------------------------
// The owner's handle

export class MailServers {
  readonly info: MailServersInfo;
  private stopping: Promise<void> | undefined;
  private stopped = false;

  constructor(info: MailServersInfo) {
    this.info = info;
  }

  /** Stops both servers (by the pids in their pid files) and removes the directory. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const l = layout(this.info.dir);
      const results = await Promise.allSettled([stopDovecot(this.info), stopPostfix(this.info)]);
      fs.rmSync(l.dir, { recursive: true, force: true });
      this.stopped = true;
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    })();
    return this.stopping;
  }

  async stopDovecot(mode?: StopMode): Promise<void> {
    await stopDovecot(this.info, mode);
  }

  async startDovecot(): Promise<void> {
    this.info.pids.dovecot = await startDovecot(this.info);
  }

  async stopPostfix(mode?: StopMode): Promise<void> {
    await stopPostfix(this.info, mode);
  }

  async startPostfix(): Promise<void> {
    this.info.pids.postfix = await startPostfix(this.info);
  }

  addUser(name: string, password: string, maildir: string, format?: MailFormat): Promise<void> {
    return addUser(this.info, name, password, maildir, format);
  }

  setAliases(aliases: Record<string, string[]>): Promise<void> {
    return setAliases(this.info, aliases);
  }

  logs(lines = 40): string {
    return serverLogs(this.info, lines);
  }

  /**
   * Last resort for 'exit' handlers, where nothing asynchronous runs (also when a stop() was
   * cut short): SIGKILL both masters and all their processes, remove the directory.
   */
  killSync(): void {
    if (this.stopped) return;
    const l = layout(this.info.dir);
    for (const [file, marker] of [
      [l.dovecotPid, l.dovecotConf],
      [l.postfixPid, l.postfixEtc],
    ] as const) {
      const pid = readPid(file);
      if (pid !== undefined && isAlive(pid) && cmdline(pid).includes(marker)) {
        for (const p of [pid, ...family(pid)]) signal(p, 'SIGKILL');
      }
    }
    this.stopped = true;
    this.stopping ??= Promise.resolve();
    fs.rmSync(l.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Start

/** Removes directories of earlier runs whose owning process is gone, stopping their masters. */
async function reapStale(base: string): Promise<void> {
  let entries: string[];
  try {
    entries = fs.readdirSync(base).filter((e) => e.startsWith(DIR_PREFIX));
  } catch {
    return;
  }
  for (const entry of entries) {
    const l = layout(path.join(base, entry));
    const owner = readPid(l.owner);
    if (owner === undefined) {
      // no owner file: only reap it once it is clearly abandoned (older than an hour)
      try {
        if (Date.now() - fs.statSync(l.dir).mtimeMs < 3_600_000) continue;
      } catch {
        continue;
      }
    } else if (isAlive(owner)) {
      continue;
    }
    try {
      await stopMaster(l.dovecotPid, l.dovecotConf, 'stale Dovecot');
      await stopMaster(l.postfixPid, l.postfixEtc, 'stale Postfix');
      fs.rmSync(l.dir, { recursive: true, force: true });
    } catch (e) {
      console.warn(`mail servers: could not clean up ${l.dir}: ${(e as Error).message}`);
    }
  }
}

async function startOnce(base: string): Promise<MailServers> {
  const dir = fs.mkdtempSync(path.join(base, DIR_PREFIX));
  const l = layout(dir);
  // Postfix and Dovecot daemons run as unprivileged users and must be able to reach in.
  fs.chmodSync(dir, 0o755);
  fs.writeFileSync(l.owner, `${process.pid}\n`);
  const id = path.basename(dir).slice(DIR_PREFIX.length);
  const [imapPort, smtpPort, lmtpPort] = (await freePorts(3)) as [number, number, number];
  const password = `pw-${randomBytes(9).toString('base64url')}`;
  const info: MailServersInfo = {
    dir,
    host: HOST,
    imapPort,
    smtpPort,
    lmtpPort,
    domain: DOMAIN,
    caFile: l.caCert,
    user: QUEUE_USER,
    password,
    maildir: path.join(l.mail, QUEUE_USER),
    aliasFile: l.aliasFile,
    pids: { dovecot: 0, postfix: 0 },
  };
  const servers = new MailServers(info);
  try {
    makeCertificates(l);

    // Dovecot
    const dovecotGid = lookupUser('dovecot').gid;
    lookupUser('dovenull');
    mkdir(l.dovecot, 0o755);
    mkdir(l.dovecotBase, 0o755);
    mkdir(l.dovecotState, 0o750);
    // setgid: user files written later by addUser (as root) stay readable by Dovecot's auth
    mkdir(l.users, 0o2750, 0, dovecotGid);
    mkdir(l.homes, 0o755);
    mkdir(l.mail, 0o755);
    fs.writeFileSync(l.dovecotConf, dovecotConfig(l, imapPort, lmtpPort, id), { mode: 0o644 });
    writeUser(l, QUEUE_USER, password, info.maildir, 'maildir');

    // Postfix
    mkdir(l.postfix, 0o755);
    mkdir(l.postfixEtc, 0o755);
    makePostfixQueue(l);
    writeFileOld(l.mainCf, postfixMainCf(l, smtpPort, lmtpPort));
    writeFileOld(l.masterCf, postfixMasterCf(smtpPort));
    writeFileOld(l.aliasFile, aliasMapText(new Map()));

    const [dovecotPid, postfixPid] = await Promise.all([
      launchDovecot(l, imapPort, lmtpPort),
      launchPostfix(l, smtpPort),
    ]);
    info.pids = { dovecot: dovecotPid, postfix: postfixPid };
    return servers;
  } catch (e) {
    await servers.stop().catch(() => undefined);
    throw e;
  }
}

/**
 * Installs (if needed) and starts a private Dovecot and Postfix. Call stop() on the result.
 */
export async function startMailServers(): Promise<MailServers> {
  install();
  const base = tempBase();
  await reapStale(base);
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(base);
    } catch (e) {
      // Another process may have taken one of the free ports between our look and the bind.
      const inUse = /Address already in use|EADDRINUSE/.test((e as Error).message);
      if (!inUse || attempt >= 3) throw e;
    }
  }
}
