// The queue's metrics in Prometheus' text format, through prom-client. Two kinds:
//
// - Depth gauges (waiting, scheduled, in flight, handled, dead, quarantined, the age of the
//   oldest waiting message, the consumers seen recently) are read from the store when /metrics
//   is scraped, so they describe the whole queue, whoever works on it.
// - Counters and the handler duration histogram count what this process did: what its client
//   published, what its workers handled, failed, dead-lettered and quarantined (by reason), and
//   how often its IMAP connections reconnected. Prometheus sums them across processes.

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Mailbus } from '../client.js';
import type { Worker } from '../consumer/worker.js';
import type { GroupStats } from '../store/store.js';

/** Handler durations, from a quick in-memory handler to a slow external call. */
const DURATION_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60];

/** The depth of one group, with the age of its oldest waiting message. */
export interface GroupDepth extends GroupStats {
  /** Seconds since the oldest waiting message was stored; 0 when none waits. */
  oldestWaitingSeconds: number;
}

/** Every group's depth, read in one go. */
export async function readDepths(bus: Mailbus): Promise<GroupDepth[]> {
  const stats = await bus.stats();
  const now = Date.now();
  const depths: GroupDepth[] = [];
  for (const group of stats) {
    let oldestWaitingSeconds = 0;
    if (group.waiting > 0) {
      const place = { topic: group.topic, group: group.group, folder: 'waiting' as const };
      const [oldest] = await bus.store.list(place, { limit: 1 });
      oldestWaitingSeconds = oldest ? Math.max(0, (now - oldest.storedAt.getTime()) / 1000) : 0;
    }
    depths.push({ ...group, oldestWaitingSeconds });
  }
  return depths;
}

export class QueueMetrics {
  readonly registry = new Registry();

  private reading: Promise<GroupDepth[]> | undefined;
  private readonly handled: Counter<'topic' | 'group'>;
  private readonly failed: Counter<'topic' | 'group'>;
  private readonly deadLettered: Counter<'topic' | 'group'>;
  private readonly quarantined: Counter<'topic' | 'group' | 'reason'>;
  private readonly published: Counter<'topic'>;
  private readonly reconnects: Counter<'role'>;
  private readonly duration: Histogram<'topic' | 'group' | 'outcome'>;
  private readonly detach: Array<() => void> = [];

  constructor(private readonly bus: Mailbus) {
    const labelNames = ['topic', 'group'] as const;
    const registers = [this.registry];
    const depths = (): Promise<GroupDepth[]> => this.depths();

    const depthGauge = (name: string, help: string, value: (depth: GroupDepth) => number) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        // prom-client calls collect with the gauge itself as `this`.
        collect: async function (this: Gauge<'topic' | 'group'>) {
          this.reset();
          for (const depth of await depths()) {
            this.set({ topic: depth.topic, group: depth.group }, value(depth));
          }
        },
      });
    depthGauge('mailbus_waiting_messages', 'Messages waiting to be claimed.', (d) => d.waiting);
    depthGauge(
      'mailbus_scheduled_messages',
      'Messages waiting for a later time (delays, retry backoff).',
      (d) => d.scheduled,
    );
    depthGauge(
      'mailbus_in_flight_messages',
      'Messages claimed by a consumer and not settled.',
      (d) => d.inFlight,
    );
    depthGauge(
      'mailbus_archived_messages',
      'Handled messages kept in the archive.',
      (d) => d.handled,
    );
    depthGauge('mailbus_dead_messages', 'Dead letters.', (d) => d.dead);
    depthGauge(
      'mailbus_quarantined_messages',
      'Messages kept in the quarantine for an operator (failed verification, malformed, too large).',
      (d) => d.quarantined,
    );
    depthGauge(
      'mailbus_oldest_waiting_age_seconds',
      'Age of the oldest waiting message, 0 when none waits.',
      (d) => d.oldestWaitingSeconds,
    );
    depthGauge(
      'mailbus_consumers',
      'Consumers seen recently: their last heartbeat is younger than 5 minutes.',
      (d) => d.consumers,
    );

    this.handled = new Counter({
      name: 'mailbus_handled_total',
      help: 'Messages handled and acked by the workers of this process.',
      labelNames,
      registers,
    });
    this.failed = new Counter({
      name: 'mailbus_failed_total',
      help: 'Failed attempts put back for a retry by the workers of this process.',
      labelNames,
      registers,
    });
    this.deadLettered = new Counter({
      name: 'mailbus_dead_lettered_total',
      help: 'Messages moved to the dead letters by the workers of this process.',
      labelNames,
      registers,
    });
    this.quarantined = new Counter({
      name: 'mailbus_quarantined_total',
      help: 'Messages moved to the quarantine by the workers of this process, by reason.',
      labelNames: ['topic', 'group', 'reason'],
      registers,
    });
    this.published = new Counter({
      name: 'mailbus_published_total',
      help: 'Messages published by this process.',
      labelNames: ['topic'],
      registers,
    });
    this.reconnects = new Counter({
      name: 'mailbus_imap_reconnects_total',
      help: 'IMAP connections of this process opened again after a drop.',
      labelNames: ['role'],
      registers,
    });
    this.duration = new Histogram({
      name: 'mailbus_handler_duration_seconds',
      help: 'How long one run of a handler took.',
      labelNames: ['topic', 'group', 'outcome'],
      buckets: DURATION_BUCKETS_SECONDS,
      registers,
    });

    this.listen();
  }

  /** The metrics in Prometheus' text exposition format. */
  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Stops counting: the client and its workers are no longer listened to. */
  close(): void {
    for (const stop of this.detach.splice(0)) {
      stop();
    }
  }

  /**
   * The groups' depths. The gauges of one scrape collect at the same moment and share one
   * reading of the store; the next scrape reads again.
   */
  depths(): Promise<GroupDepth[]> {
    if (this.reading === undefined) {
      const reading = readDepths(this.bus);
      this.reading = reading;
      const done = (): void => {
        if (this.reading === reading) {
          this.reading = undefined;
        }
      };
      reading.then(done, done);
    }
    return this.reading;
  }

  private listen(): void {
    const onPublished = (topic: string, count: number): void => {
      this.published.inc({ topic }, count);
    };
    const onAttempt = (topic: string, group: string, seconds: number, ok: boolean): void => {
      this.duration.observe({ topic, group, outcome: ok ? 'succeeded' : 'failed' }, seconds);
    };
    const onWorker = (worker: Worker, topic: string, group: string): void => {
      const counters = { acked: this.handled, failed: this.failed, dead: this.deadLettered };
      worker.on('settled', (_message, outcome) => {
        // Quarantines are counted by reason, from their own event.
        if (outcome !== 'quarantined') {
          counters[outcome].inc({ topic, group });
        }
      });
      worker.on('quarantined', (reason) => this.quarantined.inc({ topic, group, reason }));
    };
    this.bus.on('published', onPublished);
    this.bus.on('attempt', onAttempt);
    this.bus.on('worker', onWorker);
    this.detach.push(() => {
      this.bus.off('published', onPublished);
      this.bus.off('attempt', onAttempt);
      this.bus.off('worker', onWorker);
    });

    if (this.bus.store.kind === 'imap') {
      // Loaded only for an IMAP queue, as connect() loads the IMAP store.
      void import('../store/imap/connection.js').then(({ imapConnectionEvents }) => {
        const onReconnect = (role: string): void => this.reconnects.inc({ role });
        imapConnectionEvents.on('reconnected', onReconnect);
        this.detach.push(() => imapConnectionEvents.off('reconnected', onReconnect));
      });
    }
  }
}
