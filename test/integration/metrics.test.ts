// /metrics in Prometheus' text format, read back by a Prometheus text parser, after a workload
// whose numbers are known; and a paused group whose worker claims nothing until resumed.

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import type { PrometheusFamily } from 'parse-prometheus-text-format';
import { afterAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { Mailbus } from '../../src/client.js';
import { DeadLetterError } from '../../src/consumer/errors.js';
import type { HttpServer } from '../../src/http/listen.js';
import { QueueMetrics } from '../../src/metrics/metrics.js';
import { startMetricsServer } from '../../src/metrics/server.js';
import { CLI } from '../support/cli.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const url = `maildir:${join(tempDir('metrics'), 'queue')}`;
const buses: Mailbus[] = [];
const servers: HttpServer[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => server.close()));
  await Promise.all(buses.map((bus) => bus.close()));
});

async function open(): Promise<Mailbus> {
  const bus = await connect({ url });
  buses.push(bus);
  return bus;
}

async function scrape(port: number): Promise<PrometheusFamily[]> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusTextFormat(await response.text());
}

/** The value of a counter or gauge for these labels; undefined when it has no such sample. */
function value(families: PrometheusFamily[], name: string, labels: Record<string, string>) {
  const family = families.find((candidate) => candidate.name === name);
  const sample = family?.metrics.find((metric) =>
    Object.entries(labels).every(([key, wanted]) => metric.labels?.[key] === wanted),
  );
  return sample?.value === undefined ? undefined : Number(sample.value);
}

describe('metrics', () => {
  it('count a known workload: published, handled, failed, dead, waiting and durations', async () => {
    const bus = await open();
    const topic = uniqueTopic('metrics');
    await bus.subscribe(topic, 'default');
    await bus.subscribe(topic, 'later');
    const metrics = new QueueMetrics(bus);
    const server = await startMetricsServer(metrics, { port: 0, host: '127.0.0.1' });
    servers.push(server);

    // 6 messages: 4 succeed, 1 fails once and then succeeds, 1 is dead-lettered at once.
    const payloads = [1, 2, 3, 4, 'flaky', 'poison'].map((n) => ({ n }));
    await bus.publishBatch(
      topic,
      payloads.map((payload) => ({ payload })),
    );
    let flakyRuns = 0;
    const worker = bus.consume(
      topic,
      async (message) => {
        const { n } = message.payload as { n: unknown };
        if (n === 'poison') {
          throw new DeadLetterError('poison message');
        }
        if (n === 'flaky' && (flakyRuns += 1) === 1) {
          throw new Error('flaky once');
        }
      },
      { backoffMs: 0, maxMessages: 7, idleTimeoutMs: 5_000 },
    );
    const summary = await worker.done;
    expect(summary).toMatchObject({ handled: 5, failed: 1, deadLettered: 1 });

    const families = await scrape(server.port);
    const group = { topic, group: 'default' };
    const later = { topic, group: 'later' };
    expect(value(families, 'mailbus_published_total', { topic })).toBe(6);
    expect(value(families, 'mailbus_handled_total', group)).toBe(5);
    expect(value(families, 'mailbus_failed_total', group)).toBe(1);
    expect(value(families, 'mailbus_dead_lettered_total', group)).toBe(1);
    expect(value(families, 'mailbus_waiting_messages', group)).toBe(0);
    expect(value(families, 'mailbus_in_flight_messages', group)).toBe(0);
    expect(value(families, 'mailbus_archived_messages', group)).toBe(5);
    expect(value(families, 'mailbus_dead_messages', group)).toBe(1);
    expect(value(families, 'mailbus_waiting_messages', later)).toBe(6);
    const oldest = value(families, 'mailbus_oldest_waiting_age_seconds', later) as number;
    expect(oldest).toBeGreaterThan(0);
    expect(oldest).toBeLessThan(60);
    expect(value(families, 'mailbus_oldest_waiting_age_seconds', group)).toBe(0);
    expect(value(families, 'mailbus_consumers', group)).toBe(0); // the worker has stopped

    // The parser keeps no labels of a labelled histogram's _count and _sum lines, so the
    // text shows the family and its type, and prom-client's own reading the counts by outcome.
    const histogram = families.find((f) => f.name === 'mailbus_handler_duration_seconds');
    expect(histogram?.type).toBe('HISTOGRAM');
    const durations = await metrics.registry
      .getSingleMetric('mailbus_handler_duration_seconds')
      ?.get();
    const runs = (outcome: string) =>
      durations?.values.find(
        (sample) =>
          (sample as { metricName?: string }).metricName ===
            'mailbus_handler_duration_seconds_count' &&
          sample.labels.outcome === outcome &&
          sample.labels.topic === topic,
      )?.value;
    expect(runs('succeeded')).toBe(5);
    expect(runs('failed')).toBe(2);
    expect(families.find((f) => f.name === 'mailbus_imap_reconnects_total')?.type).toBe('COUNTER');
    metrics.close();
  });

  it('count quarantines by reason and show how many each group keeps', async () => {
    const bus = await connect({ url, maxMessageBytes: 10_000 });
    buses.push(bus);
    const topic = uniqueTopic('quarantine-metrics');
    await bus.subscribe(topic, 'default');
    const metrics = new QueueMetrics(bus);
    const server = await startMetricsServer(metrics, { port: 0, host: '127.0.0.1' });
    servers.push(server);

    // Planted as an MTA would deliver them: two malformed, one too large, and one good message.
    const fresh = join(url.slice('maildir:'.length), `.${topic}.default`, 'new');
    const json = 'Content-Type: application/json\r\n\r\n';
    writeFileSync(join(fresh, '1.broken.x'), `Message-ID: <broken@x>\r\n${json}{,}\r\n`);
    writeFileSync(join(fresh, '2.empty.x'), '');
    writeFileSync(join(fresh, '3.big.x'), `Message-ID: <big@x>\r\n\r\n${'z'.repeat(20_000)}\r\n`);
    await bus.publish(topic, { fine: true });

    const worker = bus.consume(topic, () => undefined, { idleTimeoutMs: 2_000 });
    expect(await worker.done).toMatchObject({ handled: 1, quarantined: 3, deadLettered: 0 });

    const families = await scrape(server.port);
    const group = { topic, group: 'default' };
    expect(value(families, 'mailbus_quarantined_total', { ...group, reason: 'malformed' })).toBe(2);
    expect(value(families, 'mailbus_quarantined_total', { ...group, reason: 'too-large' })).toBe(1);
    expect(value(families, 'mailbus_quarantined_messages', group)).toBe(3);
    expect(value(families, 'mailbus_handled_total', group)).toBe(1);
    // A quarantine is not a dead letter.
    expect(value(families, 'mailbus_dead_lettered_total', group)).toBeUndefined();

    // Released by an operator, a message leaves the gauge; the counter keeps what happened.
    const [first] = await bus.quarantine(topic).list();
    expect(await bus.quarantine(topic).release([first?.id as string])).toBe(1);
    const after = await scrape(server.port);
    expect(value(after, 'mailbus_quarantined_messages', group)).toBe(2);
    expect(value(after, 'mailbus_quarantined_total', { ...group, reason: 'malformed' })).toBe(2);
    metrics.close();
  });

  it('are served by mailbus consume --metrics-port while the worker runs', async () => {
    const bus = await open();
    const topic = uniqueTopic('consume-metrics');
    await bus.publishBatch(topic, [{ payload: 1 }, { payload: 2 }, { payload: 3 }]);

    const child = spawn(
      process.execPath,
      [CLI, 'consume', topic, '--url', url, '--metrics-port', '0', '--wait', '30s'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    try {
      let stderr = '';
      const port = await new Promise<number>((resolve, reject) => {
        child.stderr.on('data', (chunk: Buffer) => {
          stderr += chunk.toString('utf8');
          const match = /metrics at http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(stderr);
          if (match) {
            resolve(Number(match[1]));
          }
        });
        child.on('exit', () => reject(new Error(`consume exited: ${stderr}`)));
      });

      // The three messages are handled soon after the worker starts.
      let families: PrometheusFamily[] = [];
      for (let tries = 0; tries < 50; tries += 1) {
        families = await scrape(port);
        if (value(families, 'mailbus_handled_total', { topic }) === 3) {
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(value(families, 'mailbus_handled_total', { topic, group: 'default' })).toBe(3);
      expect(value(families, 'mailbus_waiting_messages', { topic, group: 'default' })).toBe(0);
      expect(value(families, 'mailbus_consumers', { topic, group: 'default' })).toBe(1);
    } finally {
      child.kill('SIGTERM');
    }
  });
});

describe('pausing a group', () => {
  it('stops its worker from claiming until it is resumed', async () => {
    const bus = await open();
    const topic = uniqueTopic('paused');
    await bus.subscribe(topic, 'default');
    await bus.pause(topic, 'default');
    await bus.publishBatch(topic, [{ payload: 'a' }, { payload: 'b' }]);

    const handled: unknown[] = [];
    const worker = bus.consume(topic, (message) => void handled.push(message.payload), {
      maxMessages: 2,
    });
    const warnings: string[] = [];
    worker.on('warning', (err: Error) => warnings.push(err.message));
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(handled).toEqual([]);
    // Said once, so that a consumer that claims nothing is not a mystery.
    expect(warnings).toEqual([
      `group "default" of topic "${topic}" is paused: nothing is claimed until it is resumed ` +
        '(in the dashboard, or with resume() in the library)',
    ]);
    expect((await bus.stats(topic))[0]).toMatchObject({ waiting: 2, inFlight: 0 });

    await bus.resume(topic, 'default');
    const summary = await worker.done;
    expect(summary.handled).toBe(2);
    expect(handled.sort()).toEqual(['a', 'b']);
  });
});
