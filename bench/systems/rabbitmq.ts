// RabbitMQ through amqplib: a durable queue (classic or quorum), persistent messages and
// publisher confirms, so that a publish resolves only once the broker has the message safe.
// Consumers take messages with manual acks and a prefetch of twice their concurrency (the
// number of messages a mailbus consumer holds: its handlers plus as many claimed ahead).

import * as fs from 'node:fs';
import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel } from 'amqplib';
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

/** How long to wait for the broker before calling it unreachable. */
const CONNECT_TIMEOUT_MS = 3000;

/** Debian's RabbitMQ keeps its messages here; the client cannot ask. */
const DEBIAN_DATA_DIR = '/var/lib/rabbitmq';

type QueueType = 'classic' | 'quorum';

class RabbitmqSystem implements QueueSystem {
  readonly warnings: string[] = [];
  readonly durability: string;
  private drained: Promise<void> | undefined;

  constructor(
    readonly id: SystemId,
    readonly storage: string,
    private readonly connection: ChannelModel,
    private readonly publisher: ConfirmChannel,
    private readonly type: QueueType,
  ) {
    this.durability =
      type === 'quorum'
        ? 'durable quorum queue, persistent messages: the confirm comes once the Raft log is fsynced'
        : 'durable classic queue, persistent messages: the confirm comes once the message store fsynced it';
    connection.on('error', (err: Error) => this.warnings.push(`connection: ${reason(err)}`));
    publisher.on('error', (err: Error) => this.warnings.push(`channel: ${reason(err)}`));
  }

  async prepare(queue: string): Promise<void> {
    await this.publisher.assertQueue(queue, {
      durable: true,
      arguments: { 'x-queue-type': this.type },
    });
  }

  async publish(queue: string, payload: Payload): Promise<void> {
    await this.send(queue, payload, true);
  }

  async publishBatch(queue: string, payloads: Payload[]): Promise<void> {
    for (const payload of payloads) {
      await this.send(queue, payload, false);
    }
    await this.publisher.waitForConfirms();
  }

  /** One message; with `confirmed`, resolves on its own confirm. Waits when the socket is full. */
  private async send(queue: string, payload: Payload, confirmed: boolean): Promise<void> {
    if (this.drained) {
      await this.drained;
    }
    const content = Buffer.from(JSON.stringify(payload));
    const options = { persistent: true, contentType: 'application/json' };
    let confirm: Promise<void> | undefined;
    let written: boolean;
    if (confirmed) {
      let settle: (err: unknown) => void = () => undefined;
      confirm = new Promise<void>((resolve, reject) => {
        settle = (err) => (err ? reject(err) : resolve());
      });
      written = this.publisher.sendToQueue(queue, content, options, (err) => settle(err));
    } else {
      written = this.publisher.sendToQueue(queue, content, options);
    }
    if (!written && !this.drained) {
      this.drained = new Promise<void>((resolve) => {
        this.publisher.once('drain', () => {
          this.drained = undefined;
          resolve();
        });
      });
    }
    await confirm;
  }

  async waiting(queue: string): Promise<number> {
    return (await this.publisher.checkQueue(queue)).messageCount;
  }

  async consume(
    queue: string,
    handler: BenchHandler,
    settings: ConsumeSettings,
  ): Promise<RunningConsumer> {
    const channel: Channel = await this.connection.createChannel();
    channel.on('error', (err: Error) => this.warnings.push(`consumer channel: ${reason(err)}`));
    await channel.prefetch(2 * settings.concurrency);
    const { consumerTag } = await channel.consume(
      queue,
      (message) => {
        if (message === null) {
          return;
        }
        handler(JSON.parse(message.content.toString('utf8')));
        channel.ack(message);
      },
      { noAck: false },
    );
    return {
      stop: async () => {
        await channel.cancel(consumerTag);
        await channel.close();
      },
    };
  }

  async remove(queue: string): Promise<void> {
    await this.publisher.deleteQueue(queue);
  }

  async close(): Promise<void> {
    try {
      await this.publisher.close();
    } finally {
      await this.connection.close();
    }
  }
}

export async function openRabbitmq(id: SystemId, endpoints: Endpoints): Promise<QueueSystem> {
  const type: QueueType = id === 'rabbitmq/quorum' ? 'quorum' : 'classic';
  let connection: ChannelModel;
  try {
    connection = await amqp.connect(endpoints.amqpUrl, { timeout: CONNECT_TIMEOUT_MS });
  } catch (err) {
    throw new Unreachable(`RabbitMQ at ${new URL(endpoints.amqpUrl).host}: ${reason(err)}`);
  }
  const publisher = await connection.createConfirmChannel();
  const version = String(connection.connection.serverProperties.version ?? '?');
  const storage = fs.existsSync(DEBIAN_DATA_DIR)
    ? `RabbitMQ ${version}, ${DEBIAN_DATA_DIR} on ${storageOf(DEBIAN_DATA_DIR)}`
    : `RabbitMQ ${version}, data directory not visible from here`;
  return new RabbitmqSystem(id, storage, connection, publisher, type);
}
