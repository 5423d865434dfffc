// `mailbus dashboard [--port 8025] [--host 127.0.0.1] [--token T]`: the web dashboard over the
// queue, until interrupted. Its actions are logged (JSON lines on stderr, level info by default).

import type { Command } from 'commander';
import { connect } from '../../client.js';
import { DEFAULT_DASHBOARD_HOST, DEFAULT_DASHBOARD_PORT } from '../../dashboard/defaults.js';
import { ERROR_CODES, MailbusError } from '../../errors.js';
import { stderrLogger } from '../../log.js';
import type { GlobalFlags } from '../options.js';
import { addConnectionFlags, connectOptions, parseDurationMs, parsePort } from '../options.js';

interface DashboardFlags extends GlobalFlags {
  port: number;
  host: string;
  token?: string;
  sampleInterval?: number;
}

export function registerDashboard(program: Command): void {
  const command = program
    .command('dashboard')
    .description('serve the web dashboard: depth, throughput, search, dead letters, actions')
    .option('--port <port>', 'port to listen on', parsePort('--port'), DEFAULT_DASHBOARD_PORT)
    .option('--host <host>', 'address to listen on', DEFAULT_DASHBOARD_HOST)
    .option(
      '--token <token>',
      'access token, required off loopback (MAILBUS_DASHBOARD_TOKEN; prefer the variable)',
    )
    .option(
      '--sample-interval <duration>',
      'how often the throughput chart reads the queue (5s)',
      parseDurationMs('--sample-interval', 100),
    )
    .addHelpText(
      'after',
      `
On 127.0.0.1 the dashboard needs no token. Anywhere else it refuses to start without one, and
every request must carry it (the page asks for it once and keeps a session cookie).

Examples:
  mailbus dashboard
  MAILBUS_DASHBOARD_TOKEN=$(cat ~/.dashboard-token) mailbus dashboard --host 0.0.0.0`,
    );
  addConnectionFlags(command).action(async (flags: DashboardFlags) => {
    // The actions are logged with who did them: info, unless a level was asked for.
    const logLevel = flags.logLevel ?? process.env.MAILBUS_LOG_LEVEL ?? 'info';
    // The web server loads only for this command: every other command starts faster without it.
    const { checkAccess } = await import('../../dashboard/access.js');
    const { startDashboard } = await import('../../dashboard/server.js');
    // Refused before connecting: a dashboard that may not start needs no queue.
    const token = checkAccess(flags.host, flags.token ?? process.env.MAILBUS_DASHBOARD_TOKEN);
    const options = connectOptions({ ...flags, logLevel });
    const bus = await connect(options);
    let dashboard;
    try {
      dashboard = await startDashboard(bus, {
        port: flags.port,
        host: flags.host,
        token,
        logger: options.logger ?? stderrLogger(logLevel),
        sampleIntervalMs: flags.sampleInterval,
      });
    } catch (err) {
      await bus.close();
      if (err instanceof MailbusError) {
        throw err;
      }
      const reason = err instanceof Error ? err.message : String(err);
      throw new MailbusError(
        ERROR_CODES.INVALID_OPTION,
        `cannot serve the dashboard on ${flags.host}:${flags.port}: ${reason}`,
      );
    }
    process.stderr.write(`mailbus: dashboard at ${dashboard.url}\n`);

    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await dashboard.close();
    await bus.close();
  });
}
