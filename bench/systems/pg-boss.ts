// pg-boss on the machine's PostgreSQL, in a schema of its own that the run drops at the end.
// Two ways to consume: work() with pg-boss's defaults (one job per fetch, a 2 s polling
// interval between fetches; one work() per handler slot), and a loop of batched fetch() calls
// that completes each batch with one complete().

import PgBoss from 'pg-boss';
import { storageOf } from '../environment.js';
import type { SystemId } from '../options.js';
import type { Payload } from '../payload.js';
import { sleep } from '../timing.js';
import type {
  BenchHandler,
  ConsumeSettings,
  Endpoints,
  OpenOptions,
  QueueSystem,
  RunningConsumer,
} from './system.js';
import { Unreachable, reason } from './system.js';

/** How long to wait for PostgreSQL before calling it unreachable. */
const CONNECT_TIMEOUT_MS = 3000;

/**
 * The fetch loop's pause after an empty fetch: pg-boss's own lowest polling interval
 * (MIN_POLLING_INTERVAL_MS in its attorney.js), so the loop polls no harder than work() may.
 */
const EMPTY_FETCH_PAUSE_MS = 500;

/** Upper bound on one fetch loop's iterations; the runner stops it long before. */
const MAX_FETCH_ROUNDS = 10_000_000;

class PgBossSystem implements QueueSystem {
  constructor(
    readonly id: SystemId,
    readonly warnings: string[],
    readonly durability: string,
    readonly storage: string,
    private readonly boss: PgBoss,
    private readonly schema: string,
    private readonly fetchBatchSize: number,
    private readonly owner: boolean,
  ) {}

  async prepare(queue: string): Promise<void> {
    await this.boss.createQueue(queue);
  }

  async publish(queue: string, payload: Payload): Promise<void> {
    await this.boss.send(queue, payload);
  }

  async publishBatch(queue: string, payloads: Payload[]): Promise<void> {
    await this.boss.insert(payloads.map((data) => ({ name: queue, data })));
  }

  async waiting(queue: string): Promise<number> {
    return this.boss.getQueueSize(queue);
  }

  async consume(
    queue: string,
    handler: BenchHandler,
    settings: ConsumeSettings,
  ): Promise<RunningConsumer> {
    if (this.id === 'pg-boss/work') {
      const ids = await Promise.all(
        Array.from({ length: settings.concurrency }, () =>
          this.boss.work<unknown>(queue, async (jobs) => {
            for (const job of jobs) {
              handler(job.data);
            }
          }),
        ),
      );
      return {
        stop: async () => {
          await Promise.all(ids.map((id) => this.boss.offWork({ id })));
        },
      };
    }
    return this.fetchLoop(queue, handler);
  }

  private fetchLoop(queue: string, handler: BenchHandler): RunningConsumer {
    const stopping = new AbortController();
    const loop = async (): Promise<void> => {
      for (let round = 0; round < MAX_FETCH_ROUNDS && !stopping.signal.aborted; round += 1) {
        const jobs = await this.boss.fetch<unknown>(queue, { batchSize: this.fetchBatchSize });
        if (jobs.length === 0) {
          await sleep(EMPTY_FETCH_PAUSE_MS, undefined, { signal: stopping.signal }).catch(
            () => undefined,
          );
          continue;
        }
        // The handlers just return, so running them in order is running them at any
        // concurrency.
        for (const job of jobs) {
          handler(job.data);
        }
        await this.boss.complete(
          queue,
          jobs.map((job) => job.id),
        );
      }
    };
    const running = loop().catch((err: unknown) => {
      this.warnings.push(`fetch loop: ${reason(err)}`);
    });
    return {
      stop: async () => {
        stopping.abort();
        await running;
      },
    };
  }

  async remove(queue: string): Promise<void> {
    try {
      await this.boss.deleteQueue(queue);
    } catch {
      // pg-boss 10 refuses to delete a queue that still has active jobs (a foreign key);
      // the whole schema is dropped when the run ends.
    }
  }

  async close(): Promise<void> {
    if (this.owner) {
      await this.boss.getDb().executeSql(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`, []);
    }
    await this.boss.stop({ graceful: false, wait: true });
  }
}

async function setting(boss: PgBoss, name: string): Promise<string> {
  const result = await boss.getDb().executeSql(`SHOW ${name}`, []);
  const row = result.rows[0] as Record<string, unknown> | undefined;
  return String(row?.[name] ?? '?');
}

export async function openPgBoss(
  id: SystemId,
  endpoints: Endpoints,
  options: OpenOptions,
): Promise<QueueSystem> {
  const schema = endpoints.pgBossSchema;
  const boss = new PgBoss({
    connectionString: endpoints.postgresUrl,
    schema,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  } as PgBoss.ConstructorOptions);
  const warnings: string[] = [];
  boss.on('error', (err) => warnings.push(`pg-boss: ${reason(err)}`));
  try {
    await boss.start();
  } catch (err) {
    await boss.stop({ graceful: false, wait: false }).catch(() => undefined);
    throw new Unreachable(`PostgreSQL at ${new URL(endpoints.postgresUrl).host}: ${reason(err)}`);
  }

  const version = await setting(boss, 'server_version');
  const synchronousCommit = await setting(boss, 'synchronous_commit');
  const fsync = await setting(boss, 'fsync');
  const dataDirectory = await setting(boss, 'data_directory').catch(() => '?');
  const durability =
    `send and insert resolve on COMMIT (synchronous_commit=${synchronousCommit}, fsync=${fsync}); ` +
    (id === 'pg-boss/work'
      ? 'work() does not await its complete()'
      : 'each fetched batch is completed with one awaited complete()');
  const storage =
    dataDirectory === '?'
      ? `PostgreSQL ${version}`
      : `PostgreSQL ${version}, data directory on ${storageOf(dataDirectory)}`;
  return new PgBossSystem(
    id,
    warnings,
    durability,
    storage,
    boss,
    schema,
    endpoints.fetchBatchSize,
    options.owner,
  );
}
