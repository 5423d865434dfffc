// A small HTTP server for /metrics alone, for a worker run without the dashboard
// (`mailbus consume --metrics-port 9464`). The dashboard serves the same route itself.

import { Hono } from 'hono';
import { listen } from '../http/listen.js';
import type { HttpServer } from '../http/listen.js';
import type { QueueMetrics } from './metrics.js';

/** Serves `GET /metrics` in Prometheus' text format. */
export function metricsRoute(app: Hono, metrics: QueueMetrics): void {
  app.get('/metrics', async (c) => {
    const text = await metrics.text();
    return c.body(text, 200, { 'Content-Type': metrics.contentType });
  });
}

export function startMetricsServer(
  metrics: QueueMetrics,
  options: { port: number; host: string },
): Promise<HttpServer> {
  const app = new Hono();
  metricsRoute(app, metrics);
  return listen(app, options);
}
