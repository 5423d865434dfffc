// NATS JetStream with file storage: one work-queue stream per phase, one durable pull consumer
// with explicit acks that every consumer of the phase pulls from (competing consumers).

import * as fs from 'node:fs';
import { AckPolicy, RetentionPolicy, StorageType, connect } from 'nats';
import type { JetStreamClient, JetStreamManager, NatsConnection } from 'nats';
import { storageOf } from '../environment.js';
import type { SystemId } from '../options.js';
import type { Payload } from '../payload.js';
import type {
  BenchHandler,
  ConsumeSettings,
  Endpoints,
  QueueSystem,
  RunningConsumer,
} from './system.js';
import { Unreachable, reason } from './system.js';

/** How long to wait for the server before calling it unreachable. */
const CONNECT_TIMEOUT_MS = 3000;

const CONSUMER = 'bench';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Stream names may not hold dots; subjects are `bench.<queue>`. */
function streamOf(queue: string): string {
  return queue.replace(/[^A-Za-z0-9_-]/g, '_');
}

function subjectOf(queue: string): string {
  return `bench.${streamOf(queue)}`;
}

class NatsSystem implements QueueSystem {
  readonly warnings: string[] = [];
  readonly durability =
    'PubAck once the server stored the message in its file store; ' +
    'not fsynced per message (nats-server syncs its files periodically)';

  constructor(
    readonly id: SystemId,
    readonly storage: string,
    private readonly connection: NatsConnection,
    private readonly manager: JetStreamManager,
    private readonly client: JetStreamClient,
  ) {}

  async prepare(queue: string): Promise<void> {
    const stream = streamOf(queue);
    await this.manager.streams.add({
      name: stream,
      subjects: [subjectOf(queue)],
      storage: StorageType.File,
      retention: RetentionPolicy.Workqueue,
    });
    await this.manager.consumers.add(stream, {
      durable_name: CONSUMER,
      ack_policy: AckPolicy.Explicit,
    });
  }

  async publish(queue: string, payload: Payload): Promise<void> {
    await this.client.publish(subjectOf(queue), encoder.encode(JSON.stringify(payload)));
  }

  async publishBatch(queue: string, payloads: Payload[]): Promise<void> {
    const subject = subjectOf(queue);
    await Promise.all(
      payloads.map((payload) =>
        this.client.publish(subject, encoder.encode(JSON.stringify(payload))),
      ),
    );
  }

  async waiting(queue: string): Promise<number> {
    return (await this.manager.consumers.info(streamOf(queue), CONSUMER)).num_pending;
  }

  async consume(
    queue: string,
    handler: BenchHandler,
    settings: ConsumeSettings,
  ): Promise<RunningConsumer> {
    const consumer = await this.client.consumers.get(streamOf(queue), CONSUMER);
    const messages = await consumer.consume({ max_messages: 2 * settings.concurrency });
    const loop = (async () => {
      for await (const message of messages) {
        handler(JSON.parse(decoder.decode(message.data)));
        message.ack();
      }
    })().catch((err: unknown) => {
      this.warnings.push(`consume loop: ${reason(err)}`);
    });
    return {
      stop: async () => {
        await messages.close();
        await loop;
      },
    };
  }

  async remove(queue: string): Promise<void> {
    await this.manager.streams.delete(streamOf(queue));
  }

  async close(): Promise<void> {
    await this.connection.drain();
  }
}

/** The store directory of a nats-server running here (from its command line), if any. */
function localStoreDir(): string | undefined {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    let args: string[];
    try {
      args = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!args[0]?.endsWith('nats-server')) {
      continue;
    }
    const at = args.findIndex((arg) => arg === '-sd' || arg === '--store_dir');
    return at === -1 ? undefined : args[at + 1];
  }
  return undefined;
}

export async function openNats(id: SystemId, endpoints: Endpoints): Promise<QueueSystem> {
  let connection: NatsConnection;
  try {
    connection = await connect({
      servers: endpoints.natsUrl,
      timeout: CONNECT_TIMEOUT_MS,
      reconnect: false,
    });
  } catch (err) {
    throw new Unreachable(`NATS at ${endpoints.natsUrl}: ${reason(err)}`);
  }
  let manager: JetStreamManager;
  try {
    manager = await connection.jetstreamManager();
  } catch (err) {
    await connection.close();
    throw new Unreachable(`NATS at ${endpoints.natsUrl} has no JetStream: ${reason(err)}`);
  }
  const version = connection.info?.version ?? '?';
  const storeDir = localStoreDir();
  const storage = storeDir
    ? `nats-server ${version}, store ${storeDir} on ${storageOf(storeDir)}`
    : `nats-server ${version}, store directory not visible from here`;
  return new NatsSystem(id, storage, connection, manager, connection.jetstream());
}
