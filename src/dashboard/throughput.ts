// Throughput over the last hour, for the overview's chart. The dashboard runs no worker, so it
// reads the store's counts at a steady interval and charts what changed between two readings:
// messages that arrived in a group, were handled, or went to the dead letters. A purge or a
// retention sweep lowers a count; a reading never charts a negative rate.

import { EventEmitter } from 'node:events';
import type { Mailbus } from '../client.js';
import { readDepths } from '../metrics/metrics.js';
import type { GroupDepth } from '../metrics/metrics.js';

/** How often the store is read by default: the chart's resolution. */
export const SAMPLE_INTERVAL_MS = 5_000;

/** How much history the chart keeps. */
const HISTORY_MS = 3_600_000;

export interface Sample {
  /** When it was read, in milliseconds since the epoch. */
  at: number;
  /** Per second since the reading before, over every group. */
  arrived: number;
  handled: number;
  dead: number;
  /** Every group's counts at this reading. */
  groups: GroupDepth[];
  paused: string[];
}

export class Throughput extends EventEmitter<{ sample: [sample: Sample] }> {
  private readonly samples: Sample[] = [];
  private previous: Map<string, GroupDepth> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reading = false;

  constructor(
    private readonly bus: Mailbus,
    private readonly intervalMs: number = SAMPLE_INTERVAL_MS,
  ) {
    super();
  }

  start(): void {
    void this.read();
    this.timer = setInterval(() => void this.read(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The samples of the last hour, the oldest first, without their per-group counts. */
  history(): Array<Omit<Sample, 'groups' | 'paused'>> {
    return this.samples.map(({ at, arrived, handled, dead }) => ({ at, arrived, handled, dead }));
  }

  latest(): Sample | undefined {
    return this.samples.at(-1);
  }

  /** Reads now, out of turn: after an action, so the page sees its effect at once. */
  async refresh(): Promise<void> {
    await this.read();
  }

  private async read(): Promise<void> {
    if (this.reading) {
      return;
    }
    this.reading = true;
    try {
      const groups = await readDepths(this.bus);
      const paused: string[] = [];
      for (const group of groups) {
        if (await this.bus.store.isPaused(group.topic, group.group)) {
          paused.push(`${group.topic}/${group.group}`);
        }
      }
      const sample = this.measure(groups, paused);
      this.samples.push(sample);
      while (this.samples.length > 0 && (this.samples[0] as Sample).at < sample.at - HISTORY_MS) {
        this.samples.shift();
      }
      this.emit('sample', sample);
    } catch {
      // A store that is briefly unreachable leaves a gap in the chart; the next reading fills on.
    } finally {
      this.reading = false;
    }
  }

  private measure(groups: GroupDepth[], paused: string[]): Sample {
    const at = Date.now();
    const last = this.samples.at(-1);
    const seconds = last === undefined ? 0 : (at - last.at) / 1000;
    let arrived = 0;
    let handled = 0;
    let dead = 0;
    const current = new Map(groups.map((group) => [`${group.topic}/${group.group}`, group]));
    if (this.previous !== undefined && seconds > 0) {
      for (const [name, now] of current) {
        const before = this.previous.get(name);
        if (before === undefined) {
          continue;
        }
        const total = (g: GroupDepth) => g.waiting + g.scheduled + g.inFlight + g.handled + g.dead;
        arrived += Math.max(0, total(now) - total(before));
        handled += Math.max(0, now.handled - before.handled);
        dead += Math.max(0, now.dead - before.dead);
      }
    }
    this.previous = current;
    const rate = (count: number) => (seconds > 0 ? count / seconds : 0);
    return { at, arrived: rate(arrived), handled: rate(handled), dead: rate(dead), groups, paused };
  }
}
