// vitest globalSetup: one private Dovecot + Postfix for the whole run (see
// test/servers/mail-servers.ts). Test files get the connection details with
// `inject('mailServers')` and keep to mailboxes (and users, list addresses) of their own.
import type { TestProject } from 'vitest/node';
import { startMailServers, type MailServersInfo } from '../servers/mail-servers.js';

declare module 'vitest' {
  export interface ProvidedContext {
    mailServers: MailServersInfo;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = Date.now();
  const servers = await startMailServers();
  const { info } = servers;
  console.log(
    `mail servers up in ${Date.now() - started} ms: IMAP ${info.host}:${info.imapPort}, ` +
      `SMTP ${info.host}:${info.smtpPort}, LMTP ${info.host}:${info.lmtpPort}, dir ${info.dir}`,
  );

  // An interrupted run (Ctrl-C, a CI timeout's SIGTERM) still stops the servers: stop them
  // properly if we get the chance, and at the very least signal both masters on exit.
  const onExit = (): void => servers.killSync();
  const onSignal = (signal: NodeJS.Signals): void => {
    void servers
      .stop()
      .catch((e: unknown) => console.error(`mail servers: stop on ${signal} failed:`, e))
      .finally(() => {
        process.off('exit', onExit);
        process.kill(process.pid, signal);
      });
  };
  process.on('exit', onExit);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  project.provide('mailServers', info);

  return async () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const stopping = Date.now();
    try {
      await servers.stop();
    } finally {
      process.off('exit', onExit);
    }
    console.log(`mail servers stopped in ${Date.now() - stopping} ms`);
  };
}
