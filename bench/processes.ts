// Runs consumers in forked processes (bench/consumer-process.ts) and measures how fast they
// empty a queue together, and how much memory each needed.

import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { ChildMessage, ParentMessage } from './consumer-process.js';
import type { SystemId } from './options.js';
import type { Endpoints } from './systems/system.js';
import { sleep } from './timing.js';

const SCRIPT = fileURLToPath(new URL('./consumer-process.js', import.meta.url));

/** How long a process may take to open its system, and to stop and report. */
const READY_TIMEOUT_MS = 60_000;
const DONE_TIMEOUT_MS = 60_000;

/** How often the runner looks at the progress reports. */
const CHECK_INTERVAL_MS = 20;

export interface ProcessRun {
  id: SystemId;
  endpoints: Endpoints;
  queue: string;
  /** Messages waiting when the consumers start. */
  target: number;
  processes: number;
  consumersPerProcess: number;
  concurrency: number;
  timeoutMs: number;
}

export interface ProcessRunResult {
  distinct: number;
  duplicates: number;
  seconds: number;
  capped: boolean;
  maxRssBytes: number[];
  readyRssBytes: number[];
  warnings: string[];
}

function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

class Child {
  readonly process: ChildProcess;
  handled = 0;
  ready: number | undefined;
  done: Extract<ChildMessage, { type: 'done' }> | undefined;
  failure: string | undefined;
  exited = false;

  constructor() {
    this.process = fork(SCRIPT, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.process.on('message', (message: ChildMessage) => {
      if (message.type === 'ready') {
        this.ready = message.rssBytes;
      } else if (message.type === 'progress') {
        this.handled = message.handled;
      } else if (message.type === 'done') {
        this.done = message;
        this.handled = message.handled;
      } else {
        this.failure = message.error;
      }
    });
    this.process.on('exit', (code) => {
      this.exited = true;
      if (!this.done && !this.failure) {
        this.failure = `consumer process exited with ${code}`;
      }
    });
  }

  send(message: ParentMessage): void {
    if (!this.exited && this.process.connected) {
      this.process.send(message);
    }
  }
}

async function until(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) {
    await sleep(CHECK_INTERVAL_MS);
  }
  return condition();
}

export async function consumeInProcesses(run: ProcessRun): Promise<ProcessRunResult> {
  const children = Array.from({ length: run.processes }, () => new Child());
  try {
    for (const child of children) {
      child.send({
        type: 'init',
        id: run.id,
        endpoints: run.endpoints,
        queue: run.queue,
        consumers: run.consumersPerProcess,
        concurrency: run.concurrency,
      });
    }
    const failed = (): string | undefined => children.find((child) => child.failure)?.failure;
    await until(
      () => children.every((child) => child.ready !== undefined) || !!failed(),
      READY_TIMEOUT_MS,
    );
    if (failed() || children.some((child) => child.ready === undefined)) {
      throw new Error(failed() ?? 'consumer processes did not get ready in time');
    }

    const started = epochNow();
    for (const child of children) {
      child.send({ type: 'start' });
    }
    const total = (): number => children.reduce((sum, child) => sum + child.handled, 0);
    await until(() => total() >= run.target || !!failed(), run.timeoutMs);
    const stoppedAt = epochNow();
    if (failed()) {
      throw new Error(failed());
    }

    for (const child of children) {
      child.send({ type: 'stop' });
    }
    await until(() => children.every((child) => child.done || child.failure), DONE_TIMEOUT_MS);
    const reports = children.map((child) => child.done);
    if (reports.some((report) => report === undefined)) {
      throw new Error(failed() ?? 'consumer processes did not report in time');
    }
    const done = reports as NonNullable<Child['done']>[];

    const seen = new Set<number>();
    let handled = 0;
    for (const report of done) {
      handled += report.seqs.length;
      for (const seq of report.seqs) {
        seen.add(seq);
      }
    }
    const complete = seen.size >= run.target;
    const lastAt = Math.max(...done.map((report) => report.lastAtEpochMs));
    return {
      distinct: seen.size,
      duplicates: handled - seen.size,
      seconds: ((complete ? lastAt : stoppedAt) - started) / 1000,
      capped: !complete,
      maxRssBytes: done.map((report) => report.maxRssBytes),
      readyRssBytes: children.map((child) => child.ready ?? 0),
      warnings: done.flatMap((report) => report.warnings),
    };
  } finally {
    for (const child of children) {
      if (!child.exited) {
        child.process.kill('SIGKILL');
      }
    }
  }
}
