// Starting and stopping the HTTP servers of mailbus (the dashboard, /metrics of a worker) on
// Node's http module, through hono's Node adapter.

import { serve } from '@hono/node-server';
import type { ServerType } from '@hono/node-server';
import type { Hono } from 'hono';

export interface HttpServer {
  /** The port it listens on (the one the system chose when 0 was asked for). */
  port: number;
  close(): Promise<void>;
}

/** Starts `app` on host:port; resolves once it listens, rejects when it cannot. */
export function listen(app: Hono, options: { port: number; host: string }): Promise<HttpServer> {
  return new Promise((resolve, reject) => {
    let server: ServerType | undefined = undefined;
    server = serve({ fetch: app.fetch, port: options.port, hostname: options.host }, (info) => {
      resolve({ port: info.port, close: () => closeServer(server as ServerType) });
    });
    server.once('error', reject);
  });
}

function closeServer(server: ServerType): Promise<void> {
  return new Promise((resolve) => {
    // Open event streams would hold close() forever: end them with the server.
    if ('closeAllConnections' in server) {
      server.closeAllConnections();
    }
    server.close(() => resolve());
  });
}
