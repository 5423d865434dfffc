// Starting the dashboard: checks the bind address against the token, then serves the app
// (app.ts) with its throughput sampler and metrics, until close().

import type { Mailbus } from '../client.js';
import { listen } from '../http/listen.js';
import type { Logger } from '../log.js';
import { QueueMetrics } from '../metrics/metrics.js';
import { checkAccess } from './access.js';
import { dashboardApp } from './app.js';
import { SAMPLE_INTERVAL_MS, Throughput } from './throughput.js';

import { DEFAULT_DASHBOARD_HOST, DEFAULT_DASHBOARD_PORT } from './defaults.js';

export { DEFAULT_DASHBOARD_HOST, DEFAULT_DASHBOARD_PORT };

export interface DashboardOptions {
  port?: number;
  host?: string;
  /** Required when the host is not a loopback address. */
  token?: string;
  logger: Logger;
  /** How often the throughput chart reads the store (default 5 s). */
  sampleIntervalMs?: number;
}

export interface Dashboard {
  /** The page's address (without any secret). */
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startDashboard(bus: Mailbus, options: DashboardOptions): Promise<Dashboard> {
  const host = options.host ?? DEFAULT_DASHBOARD_HOST;
  const token = checkAccess(host, options.token);
  const metrics = new QueueMetrics(bus);
  const throughput = new Throughput(bus, options.sampleIntervalMs ?? SAMPLE_INTERVAL_MS);
  const app = dashboardApp({ bus, metrics, throughput, token, logger: options.logger });

  const server = await listen(app, { port: options.port ?? DEFAULT_DASHBOARD_PORT, host });
  throughput.start();
  const shown = host.includes(':') ? `[${host}]` : host;
  const url = `http://${shown}:${server.port}/`;
  options.logger.info({ event: 'dashboard.started', url, token: token !== undefined });

  let closing: Promise<void> | undefined;
  return {
    url,
    port: server.port,
    close: () => {
      closing ??= (async () => {
        throughput.stop();
        metrics.close();
        await server.close();
      })();
      return closing;
    },
  };
}
