// BullMQ on the machine's Redis, with BullMQ's defaults: Queue.add per message, addBulk per
// batch, a Worker with the benchmark's concurrency. Completed jobs are kept (BullMQ's default,
// like mailbus's archive) and the whole queue is obliterated after its phase.

import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
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

/** How long to wait for Redis before calling it unreachable. */
const CONNECT_TIMEOUT_MS = 3000;

interface RedisAddress {
  host: string;
  port: number;
}

function addressOf(url: string): RedisAddress {
  const parsed = new URL(url);
  return { host: parsed.hostname, port: Number(parsed.port || 6379) };
}

class BullmqSystem implements QueueSystem {
  readonly warnings: string[] = [];
  private readonly queues = new Map<string, Queue>();

  constructor(
    readonly id: SystemId,
    readonly durability: string,
    readonly storage: string,
    private readonly address: RedisAddress,
  ) {}

  private queue(name: string): Queue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue(name, { connection: { ...this.address } });
      queue.on('error', (err) => this.warnings.push(`queue: ${reason(err)}`));
      this.queues.set(name, queue);
    }
    return queue;
  }

  async prepare(name: string): Promise<void> {
    await this.queue(name).waitUntilReady();
  }

  async publish(name: string, payload: Payload): Promise<void> {
    await this.queue(name).add('message', payload);
  }

  async publishBatch(name: string, payloads: Payload[]): Promise<void> {
    await this.queue(name).addBulk(payloads.map((data) => ({ name: 'message', data })));
  }

  async waiting(name: string): Promise<number> {
    return this.queue(name).getWaitingCount();
  }

  async consume(
    name: string,
    handler: BenchHandler,
    settings: ConsumeSettings,
  ): Promise<RunningConsumer> {
    const worker = new Worker(
      name,
      async (job) => {
        handler(job.data);
      },
      {
        // Workers block on Redis, so BullMQ wants no retry limit on their commands.
        connection: { ...this.address, maxRetriesPerRequest: null },
        concurrency: settings.concurrency,
      },
    );
    worker.on('error', (err) => this.warnings.push(`worker: ${reason(err)}`));
    await worker.waitUntilReady();
    return {
      stop: async () => {
        await worker.close();
      },
    };
  }

  async remove(name: string): Promise<void> {
    const queue = this.queue(name);
    await queue.obliterate({ force: true });
    await queue.close();
    this.queues.delete(name);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((queue) => queue.close()));
    this.queues.clear();
  }
}

/** Redis's version and persistence settings, which decide what an acknowledged add means. */
interface RedisFacts {
  version: string;
  durability: string;
  storage: string;
}

async function redisFacts(address: RedisAddress): Promise<RedisFacts> {
  const redis = new Redis({
    ...address,
    lazyConnect: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    const info = await redis.info('server');
    const version = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
    const setting = async (name: string): Promise<string> =>
      ((await redis.config('GET', name)) as string[])[1] ?? '?';
    const appendonly = await setting('appendonly');
    const appendfsync = await setting('appendfsync');
    const save = await setting('save');
    const dir = await setting('dir');
    const snapshots = save.trim() === '' ? 'no RDB snapshots' : `RDB snapshots (save "${save}")`;
    const durability =
      appendonly === 'yes'
        ? `add resolves once Redis holds the job in memory; AOF on (appendfsync ${appendfsync}), ${snapshots}`
        : `add resolves once Redis holds the job in memory; AOF off, ${snapshots}` +
          (save.trim() === '' ? ': no persistence at all' : '');
    return {
      version,
      durability,
      storage: `Redis ${version}, data directory on ${storageOf(dir)}`,
    };
  } finally {
    redis.disconnect();
  }
}

export async function openBullmq(id: SystemId, endpoints: Endpoints): Promise<QueueSystem> {
  const address = addressOf(endpoints.redisUrl);
  let facts: RedisFacts;
  try {
    facts = await redisFacts(address);
  } catch (err) {
    throw new Unreachable(`Redis at ${address.host}:${address.port}: ${reason(err)}`);
  }
  return new BullmqSystem(id, facts.durability, facts.storage, address);
}
