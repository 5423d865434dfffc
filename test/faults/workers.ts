// The worker processes of a fault scenario: `mailbus consume --exec` children of the test
// (run from the snapshot of dist/ that faults.global.ts takes), whose handler commands record
// every start in the ledger. Started, killed with SIGKILL,
// replaced and stopped by pid; their stderr is kept in a file for the report. A worker that
// exits when the scenario did not ask it to is a broken guarantee ("workers keep running").

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { inject } from 'vitest';
import type { Fault, HandlerBehaviour, Ledger } from './ledger.js';

/** Time a worker process is given to load before it is asked to stop (see stop()). */
const WORKER_STARTUP_MS = 5_000;
/** How long a stopping worker may take before it is killed: its grace (10 s) and a margin. */
export const WORKER_STOP_TIMEOUT_MS = 15_000;
/** Every worker logs its warnings, for the evidence of a failed scenario. */
const WORKER_LOGGING = ['--log-level', 'warn'];
/** Bytes of a worker's stderr quoted in a report. */
const STDERR_TAIL_BYTES = 600;
/** How often a killed worker's in-progress mailbox is looked at until others took it over. */
const RECOVERY_POLL_MS = 50;

export interface FleetOptions {
  ledger: Ledger;
  topic: string;
  /** The store's MAILBUS_URL and credentials. */
  env: NodeJS.ProcessEnv;
  /** Flags for `mailbus consume` besides --exec: --lease, --concurrency, --max-attempts... */
  flags: string[];
  behaviour?: HandlerBehaviour;
  /** Where each worker's stderr file goes. */
  logDir: string;
  /**
   * How many messages the worker with this pid holds in its in-progress mailbox: after a kill,
   * recovery is done once this is 0 (another worker took them over).
   */
  inFlightOf?: (pid: number) => number;
  /** The ids of the messages inFlightOf counts, recorded with the kill. */
  heldBy?: (pid: number) => string[];
}

export interface FleetWorker {
  /** w1, w2, ...: names its ledger and stderr files. */
  name: string;
  pid: number;
  startedAt: number;
  /** Set once the process has exited. */
  exit?: { code: number | null; signal: NodeJS.Signals | null; at: number };
  /** The scenario killed or stopped it: its exit is no surprise. */
  expected: boolean;
  exited: Promise<void>;
  stderrFile: string;
}

export class WorkerFleet {
  /** The workers the scenario killed: attempts they had started may run again. */
  readonly killedWorkers = new Set<string>();
  private readonly workers: FleetWorker[] = [];
  private readonly recoveries: Promise<void>[] = [];
  private stopping = false;
  private started = 0;

  constructor(private readonly options: FleetOptions) {
    fs.mkdirSync(options.logDir, { recursive: true });
  }

  /** Starts one more worker. */
  start(): FleetWorker {
    const { ledger, topic, env, flags, behaviour, logDir } = this.options;
    this.started += 1;
    const name = `w${this.started}`;
    const stderrFile = join(logDir, `${name}.stderr`);
    const stderr = fs.openSync(stderrFile, 'a');
    // Warnings go to stderr as JSON lines with their time: lease takeovers, failed acks.
    const args = ['consume', topic, '--exec', ledger.handlerCommand(name, behaviour)];
    const child = spawn(
      process.execPath,
      [inject('faultsCli'), ...args, ...WORKER_LOGGING, ...flags],
      {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'ignore', stderr],
      },
    );
    fs.closeSync(stderr);
    if (child.pid === undefined) {
      throw new Error(`could not start worker ${name}`);
    }

    const worker: FleetWorker = {
      name,
      pid: child.pid,
      startedAt: Date.now(),
      expected: false,
      stderrFile,
      exited: new Promise((resolve) => {
        child.once('exit', (code, signal) => {
          worker.exit = { code, signal, at: Date.now() };
          resolve();
        });
      }),
    };
    this.workers.push(worker);
    return worker;
  }

  /** Workers that have not exited. */
  live(): FleetWorker[] {
    return this.workers.filter((worker) => worker.exit === undefined);
  }

  /**
   * kill -9 of one worker; waits until it is gone. In the background, watches its in-progress
   * mailbox until other workers have taken over what it held, and then records the fault,
   * with that time, in the ledger.
   */
  async kill(worker: FleetWorker): Promise<void> {
    worker.expected = true;
    this.killedWorkers.add(worker.name);
    const at = Date.now();
    signal(worker.pid, 'SIGKILL');
    await worker.exited;

    const fault: Fault = {
      label: `kill -9 ${worker.name}`,
      at,
      clearedAt: at,
      worker: worker.name,
    };
    const inFlightOf = this.options.inFlightOf;
    const inFlight = inFlightOf?.(worker.pid) ?? 0;
    const held = this.options.heldBy?.(worker.pid);
    if (!inFlightOf || inFlight === 0) {
      this.options.ledger.fault({ ...fault, inFlight, held });
      return;
    }
    this.recoveries.push(
      (async () => {
        while (!this.stopping && inFlightOf(worker.pid) > 0) {
          await sleep(RECOVERY_POLL_MS);
        }
        const recoveredAt = inFlightOf(worker.pid) === 0 ? Date.now() : undefined;
        this.options.ledger.fault({ ...fault, inFlight, held, recoveredAt });
      })(),
    );
  }

  /** Workers that exited without being asked to, described with the end of their stderr. */
  unexpectedExits(): string[] {
    return this.workers
      .filter((worker) => worker.exit !== undefined && !worker.expected)
      .map((worker) => `worker ${worker.name} exited by itself (${describeExit(worker)})`);
  }

  /**
   * Stops every live worker with SIGTERM, as an operator would, and waits for them; kills with
   * SIGKILL those that do not stop in time, then the handler commands they left. Returns the
   * problems seen: a worker that exited non-zero, one that had to be killed.
   */
  async stop(timeoutMs = WORKER_STOP_TIMEOUT_MS): Promise<string[]> {
    this.stopping = true;
    await Promise.all(this.recoveries);
    const problems: string[] = [];
    const stopping = this.live();
    // A worker started just now (in place of one killed at the end of a run) may still be
    // loading: until its signal handlers are in, a SIGTERM ends it by the signal, as it would
    // any program, and the graceful stop this checks is that of a running worker.
    const youngest = Math.max(0, ...stopping.map((worker) => worker.startedAt));
    await sleep(Math.max(0, youngest + WORKER_STARTUP_MS - Date.now()));
    for (const worker of stopping) {
      worker.expected = true;
      signal(worker.pid, 'SIGTERM');
    }
    const deadline = Date.now() + timeoutMs;
    for (const worker of stopping) {
      const left = Math.max(0, deadline - Date.now());
      await Promise.race([worker.exited, sleep(left)]);
      if (worker.exit === undefined) {
        problems.push(`worker ${worker.name} did not stop within ${timeoutMs} ms of SIGTERM`);
        signal(worker.pid, 'SIGKILL');
        await worker.exited;
      } else if (worker.exit.code !== 0) {
        problems.push(`worker ${worker.name} stopped with ${describeExit(worker)}`);
      }
    }
    this.reapHandlers();
    return problems;
  }

  /** Kills every worker at once (cleanup after a failure); idempotent. */
  async killAll(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.recoveries);
    const live = this.live();
    for (const worker of live) {
      worker.expected = true;
      signal(worker.pid, 'SIGKILL');
    }
    await Promise.all(live.map((worker) => worker.exited));
    this.reapHandlers();
  }

  /**
   * Kills the handler commands still running after their worker went (a kill -9 does not reach
   * them: each runs in a process group of its own). Each pid comes from the ledger and is
   * checked against /proc/PID/cmdline first, which names our ledger, so a reused pid is left
   * alone. Returns how many were killed.
   */
  reapHandlers(): number {
    const { ledger } = this.options;
    let killed = 0;
    for (const pid of new Set(ledger.starts().map((start) => start.handlerPid))) {
      let cmdline: string;
      try {
        cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        continue; // gone
      }
      if (!cmdline.includes(ledger.dir)) {
        continue;
      }
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        signal(pid, 'SIGKILL');
      }
      killed += 1;
    }
    return killed;
  }
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

function describeExit(worker: FleetWorker): string {
  const how = worker.exit?.signal ? `signal ${worker.exit.signal}` : `code ${worker.exit?.code}`;
  let tail = '';
  try {
    tail = fs.readFileSync(worker.stderrFile, 'utf8').trim().slice(-STDERR_TAIL_BYTES);
  } catch {
    // no stderr file
  }
  return tail ? `${how}; stderr: ${tail.replace(/\s*\n\s*/g, ' | ')}` : how;
}
