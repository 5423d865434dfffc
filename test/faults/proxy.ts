// A TCP proxy on loopback that can make its connections go silent without closing them: the
// fault of a NAT entry that expired, a peer that froze, a cable pulled somewhere between.
// silence() black-holes every connection open at that moment (bytes from either side are
// dropped, nothing is closed); connections made afterwards are forwarded as usual, so a client
// that notices and reconnects gets through.

import { createServer, connect } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';

interface Pair {
  client: Socket;
  upstream: Socket;
  silent: boolean;
}

export class SilenceableProxy {
  private readonly pairs = new Set<Pair>();
  private readonly server: Server;
  private listeningPort = 0;

  private constructor(private readonly target: { host: string; port: number }) {
    this.server = createServer((client) => this.forward(client));
  }

  /** Listens on 127.0.0.1 (a free port) and forwards to `target`. */
  static async start(target: { host: string; port: number }): Promise<SilenceableProxy> {
    const proxy = new SilenceableProxy(target);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.listeningPort = (proxy.server.address() as AddressInfo).port;
    return proxy;
  }

  get port(): number {
    return this.listeningPort;
  }

  private forward(client: Socket): void {
    const upstream = connect({ host: this.target.host, port: this.target.port });
    const pair: Pair = { client, upstream, silent: false };
    this.pairs.add(pair);
    client.on('data', (chunk) => {
      if (!pair.silent) {
        upstream.write(chunk);
      }
    });
    upstream.on('data', (chunk) => {
      if (!pair.silent) {
        client.write(chunk);
      }
    });
    // A close passes through, except from the server side of a silenced pair: the client must
    // not learn anything there.
    const closeBoth = (): void => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('close', closeBoth);
    client.on('error', closeBoth);
    upstream.on('close', () => (pair.silent ? undefined : closeBoth()));
    upstream.on('error', () => (pair.silent ? undefined : closeBoth()));
  }

  /** Connections open now. */
  get open(): number {
    return this.pairs.size;
  }

  /** Black-holes every open connection; returns how many. */
  silence(): number {
    for (const pair of this.pairs) {
      pair.silent = true;
    }
    return this.pairs.size;
  }

  /** Silenced connections that are still open (their clients have not noticed). */
  get silenced(): number {
    return [...this.pairs].filter((pair) => pair.silent && !pair.client.destroyed).length;
  }

  /** Closes every connection and stops listening. */
  async close(): Promise<void> {
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
