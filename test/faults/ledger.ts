// The fault suite's ledger and its checker. While a scenario runs, the publisher records every
// id it was told is stored and every publish that failed, and each worker's handler command
// records every start and every successful end: append-only files, one line per event, written
// with O_APPEND so that lines from processes running side by side never mix. Afterwards the
// checker reads the ledger back together with what the store holds, and reports published,
// handled, duplicates, lost and recovery time, with every broken guarantee spelled out.
//
// Line formats (tab-separated, times in epoch milliseconds):
//   published.log    P  time  id                     the publish of id resolved
//                    F  time  id  error              the publish of id threw: stored or not
//   handlers/W.log   S  time  id  attempt  parent-pid  handler-pid   worker W started a handler
//                    D  time  id  attempt  parent-pid                W's handler succeeded
//   faults.log       one JSON object per fault (what, when, when it was cleared, whom)
//
// The worker is named by the file, not by the parent pid the shell reports: a handler shell
// spawned just before its worker was killed may only run after it, as an orphan of pid 1.

import * as fs from 'node:fs';
import { join } from 'node:path';
import type { GroupState } from './mailboxes.js';

/** What a handler does besides recording itself, chosen by the message's payload. */
export interface HandlerBehaviour {
  /** Payload `{"kind":"hang"}`: sleep far past any time limit (the worker must kill it). */
  hang?: boolean;
  /** Payload `{"kind":"segv"}`: the handler's shell kills itself with SIGSEGV. */
  segv?: boolean;
}

/** One interruption a scenario caused. */
export interface Fault {
  /** What was done: `kill -9 w3`, `Dovecot stopped (crash)`, `connections silenced`. */
  label: string;
  /** When the fault began. */
  at: number;
  /** When it was cleared (the server was back); equal to `at` for a kill. */
  clearedAt: number;
  /** The worker killed, for a kill (its name: w1, w2, ...). */
  worker?: string;
  /** Messages the killed worker held in its in-progress mailbox when it was killed. */
  inFlight?: number;
  /**
   * The ids of those messages, where the scenario can read them: in its own in-progress mailbox
   * and in the tombs of dead workers it was taking over.
   */
  held?: string[];
  /** When the last of those was taken over by another worker (its mailbox emptied). */
  recoveredAt?: number;
  /** Messages whose first start after the fault marks recovery (published during it). */
  watch?: string[];
}

export interface HandlerStart {
  at: number;
  id: string;
  attempt: number;
  /** The worker whose handler it was (w1, w2, ...). */
  worker: string;
  handlerPid: number;
}

export interface HandlerEnd {
  at: number;
  id: string;
  attempt: number;
  worker: string;
}

/** Everything the ledger holds, parsed. */
export interface LedgerFacts {
  /** Ids whose publish resolved, with the time it did. */
  published: Map<string, number>;
  /** Ids whose publish threw: the message may or may not have been stored. */
  failedPublishes: Map<string, string>;
  starts: HandlerStart[];
  ends: HandlerEnd[];
  faults: Fault[];
  /** Lines that could not be parsed (a writer cut off mid-line). */
  tornLines: number;
}

/** The ledger of one run: a directory of append-only files. */
export class Ledger {
  readonly dir: string;
  readonly handlersDir: string;
  private readonly publishedFile: string;
  private readonly faultsFile: string;

  constructor(dir: string) {
    this.dir = dir;
    this.handlersDir = join(dir, 'handlers');
    this.publishedFile = join(dir, 'published.log');
    this.faultsFile = join(dir, 'faults.log');
    fs.mkdirSync(this.handlersDir, { recursive: true });
  }

  /** Records ids whose publish resolved: from now on the store must hold them. */
  published(ids: string[]): void {
    const now = Date.now();
    appendLines(
      this.publishedFile,
      ids.map((id) => `P\t${now}\t${id}`),
    );
  }

  /** Records ids whose publish threw. */
  publishFailed(ids: string[], error: unknown): void {
    const now = Date.now();
    const text = (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ');
    appendLines(
      this.publishedFile,
      ids.map((id) => `F\t${now}\t${id}\t${text}`),
    );
  }

  fault(fault: Fault): void {
    appendLines(this.faultsFile, [JSON.stringify(fault)]);
  }

  /** The handler ledger file of one worker. */
  handlerFile(worker: string): string {
    return join(this.handlersDir, `${worker}.log`);
  }

  /**
   * The shell command a worker runs per message (`mailbus consume --exec`). It records its
   * start, behaves as the payload asks, and records its end. The ledger path is part of the
   * command text, so /proc/PID/cmdline tells our handler shells from anyone else's processes.
   */
  handlerCommand(worker: string, behaviour: HandlerBehaviour = {}): string {
    const file = this.handlerFile(worker);
    if (file.includes("'")) {
      throw new Error(`the ledger path must not contain a quote: ${file}`);
    }
    const now = '"$(date +%s%3N)"';
    const lines = [
      `led='${file}'`,
      `printf 'S\\t%s\\t%s\\t%s\\t%s\\t%s\\n' ${now} "$MAILBUS_ID" "$MAILBUS_ATTEMPT" "$PPID" "$$" >> "$led"`,
    ];
    if (behaviour.hang || behaviour.segv) {
      const cases: string[] = [];
      if (behaviour.hang) {
        cases.push(`*'"kind":"hang"'*) exec sleep 600 ;;`);
      }
      if (behaviour.segv) {
        cases.push(`*'"kind":"segv"'*) kill -SEGV $$ ;;`);
      }
      lines.push(`case "$(cat)" in ${cases.join(' ')} esac`);
    }
    lines.push(
      `printf 'D\\t%s\\t%s\\t%s\\t%s\\n' ${now} "$MAILBUS_ID" "$MAILBUS_ATTEMPT" "$PPID" >> "$led"`,
    );
    return lines.join('\n');
  }

  /** Every handler start recorded so far (for progress checks while a run goes on). */
  starts(): HandlerStart[] {
    return this.read().starts;
  }

  read(): LedgerFacts {
    const facts: LedgerFacts = {
      published: new Map(),
      failedPublishes: new Map(),
      starts: [],
      ends: [],
      faults: [],
      tornLines: 0,
    };
    for (const line of readLines(this.publishedFile)) {
      const [kind, at, id, ...rest] = line.split('\t');
      if (kind === 'P' && id) {
        facts.published.set(id, Number(at));
      } else if (kind === 'F' && id) {
        facts.failedPublishes.set(id, rest.join('\t'));
      } else {
        facts.tornLines += 1;
      }
    }
    for (const name of listFiles(this.handlersDir)) {
      const worker = name.replace(/\.log$/, '');
      for (const line of readLines(join(this.handlersDir, name))) {
        const [kind, at, id, attempt, , handlerPid] = line.split('\t');
        const time = Number(at);
        if (!id || !Number.isFinite(time) || !Number.isInteger(Number(attempt))) {
          facts.tornLines += 1;
        } else if (kind === 'S' && handlerPid !== undefined) {
          facts.starts.push({
            at: time,
            id,
            attempt: Number(attempt),
            worker,
            handlerPid: Number(handlerPid),
          });
        } else if (kind === 'D') {
          facts.ends.push({ at: time, id, attempt: Number(attempt), worker });
        } else {
          facts.tornLines += 1;
        }
      }
    }
    for (const line of readLines(this.faultsFile)) {
      facts.faults.push(JSON.parse(line) as Fault);
    }
    facts.starts.sort((a, b) => a.at - b.at);
    facts.ends.sort((a, b) => a.at - b.at);
    return facts;
  }
}

function appendLines(file: string, lines: string[]): void {
  if (lines.length > 0) {
    // One write per call, opened with O_APPEND: whole lines, never interleaved.
    fs.appendFileSync(file, `${lines.join('\n')}\n`);
  }
}

function readLines(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter((line) => line.length > 0);
}

function listFiles(dir: string): string[] {
  try {
    return fs.readdirSync(dir).filter((name) => name.endsWith('.log'));
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------------------------
// The checker

export interface CheckOptions {
  scenario: string;
  store: string;
  /**
   * A fault-free control run: any duplicate is a broken guarantee. Otherwise a duplicate is
   * allowed only where a fault interrupted the earlier attempt.
   */
  faultFree?: boolean;
  /** Ids meant to fail every attempt: each must be started exactly maxAttempts times, then die. */
  poison?: { ids: Set<string>; maxAttempts: number; lastError?: Map<string, RegExp> };
  /** Workers the scenario killed (w1, w2, ...). */
  killedWorkers?: Set<string>;
  /** How long around an outage an attempt counts as interrupted by it. */
  faultSlackMs?: number;
  /** Recovery from each fault must take at most this long. */
  recoveryBoundMs?: number;
  /**
   * Recovery measured by the scenario itself, when handler starts do not show it; the bound
   * then applies to it instead of to each fault.
   */
  recoveryMs?: number;
  /** Broken guarantees the scenario found itself (a worker that died, a publish too slow). */
  extraViolations?: string[];
}

export interface RunReport {
  scenario: string;
  store: string;
  published: number;
  /** Distinct messages whose handler started at least once. */
  handled: number;
  /** Handler starts beyond the first per message (beyond maxAttempts for poison messages). */
  duplicates: number;
  /** Published messages never acked (or, for poison messages, never dead-lettered). */
  lost: number;
  /** Dead letters at the end. */
  dead: number;
  /** Failed publishes whose message was stored all the same (allowed: the outcome is unknown). */
  storedDespiteError: number;
  faults: number;
  /** The longest recovery of any fault: from the fault (or its end) to handling resumed. */
  recoveryMs: number | undefined;
  violations: string[];
}

/** How long before and after an outage an attempt still counts as interrupted by it. */
const DEFAULT_FAULT_SLACK_MS = 5_000;
/** At most this many example ids per violation line. */
const EXAMPLES = 5;

export function checkRun(ledger: Ledger, state: GroupState, options: CheckOptions): RunReport {
  const facts = ledger.read();
  const violations: string[] = [...(options.extraViolations ?? [])];
  const poison = options.poison?.ids ?? new Set<string>();
  const slackMs = options.faultSlackMs ?? DEFAULT_FAULT_SLACK_MS;
  const killed = options.killedWorkers ?? new Set<string>();
  const outages = facts.faults.filter((fault) => fault.worker === undefined);
  const heldAtKill = new Set(facts.faults.flatMap((fault) => fault.held ?? []));

  if (facts.tornLines > 0) {
    violations.push(`${facts.tornLines} ledger lines were torn`);
  }

  // Handler starts per message, in time order.
  const startsById = new Map<string, HandlerStart[]>();
  for (const start of facts.starts) {
    const list = startsById.get(start.id) ?? [];
    list.push(start);
    startsById.set(start.id, list);
  }
  const known = (id: string): boolean => facts.published.has(id) || facts.failedPublishes.has(id);
  const phantoms = [...startsById.keys()].filter((id) => !known(id));
  if (phantoms.length > 0) {
    violations.push(
      `${phantoms.length} messages were handled that nobody published: ${sample(phantoms)}`,
    );
  }

  // Duplicates: starts beyond the expected number, and whether a fault explains each.
  let duplicates = 0;
  const unexplained: string[] = [];
  for (const [id, starts] of startsById) {
    const expected = poison.has(id) ? (options.poison?.maxAttempts ?? 1) : 1;
    const extra = starts.length - expected;
    if (extra <= 0) {
      continue;
    }
    duplicates += extra;
    if (options.faultFree) {
      unexplained.push(id);
      continue;
    }
    // A message a killed worker held may have had its new copy stored (a release, a retry)
    // before the old one was removed: the documented crash duplicate, whoever handles the two.
    if (heldAtKill.has(id)) {
      continue;
    }
    // Every start but the last must have been cut short by a kill or an outage.
    const interrupted = (start: HandlerStart): boolean =>
      killed.has(start.worker) ||
      outages.some(
        (fault) => start.at >= fault.at - slackMs && start.at <= fault.clearedAt + slackMs,
      );
    const cut = poison.has(id) ? starts.slice(0, extra) : starts.slice(0, -1);
    if (!cut.every(interrupted)) {
      unexplained.push(id);
    }
  }
  if (options.faultFree && duplicates > 0) {
    violations.push(
      `${duplicates} duplicate handler starts in a fault-free run: ${sample(unexplained)}`,
    );
  } else if (unexplained.length > 0) {
    violations.push(
      `${unexplained.length} messages were started again although no fault interrupted the ` +
        `earlier attempt: ${sample(unexplained)}`,
    );
  }

  // What the store holds at the end.
  const archived = new Set(state.archived.map((copy) => copy.id));
  const deadById = new Map(state.dead.map((copy) => [copy.id, copy]));
  const lost: string[] = [];
  for (const id of facts.published.keys()) {
    const settled = poison.has(id) ? deadById.has(id) : archived.has(id);
    if (!settled) {
      lost.push(id);
    }
  }
  if (lost.length > 0) {
    const where = lost.map((id) => `${id} (${whereIs(id, state, startsById.has(id))})`);
    violations.push(`${lost.length} published messages were lost: ${sample(where)}`);
  }
  for (const [id, copy] of deadById) {
    if (!poison.has(id)) {
      violations.push(`message ${id} was dead-lettered: ${copy.lastError ?? '(no error)'}`);
    }
  }
  for (const id of poison) {
    const starts = startsById.get(id)?.length ?? 0;
    const expected = options.poison?.maxAttempts ?? 1;
    const copy = deadById.get(id);
    if (starts < expected) {
      violations.push(`poison message ${id} was started ${starts} times, not ${expected}`);
    }
    if (copy && copy.attempts !== expected) {
      violations.push(`dead letter ${id} says ${copy.attempts} attempts, not ${expected}`);
    }
    const pattern = options.poison?.lastError?.get(id);
    if (copy && pattern && !pattern.test(copy.lastError ?? '')) {
      violations.push(`dead letter ${id} has last error "${copy.lastError}", not ${pattern}`);
    }
    if (archived.has(id)) {
      violations.push(`poison message ${id} was acked`);
    }
  }
  const leftovers = [
    ...state.waiting.map((copy) => `${copy.id} waiting`),
    ...state.scheduled.map((copy) => `${copy.id} scheduled`),
    ...state.inFlight.map((copy) => `${copy.id} in flight`),
  ];
  if (leftovers.length > 0) {
    violations.push(`${leftovers.length} messages left unsettled: ${sample(leftovers)}`);
  }

  const storedDespiteError = [...facts.failedPublishes.keys()].filter(
    (id) => archived.has(id) || deadById.has(id) || startsById.has(id),
  ).length;

  // Recovery: per fault, from the fault (or its end) to handling resumed.
  const recoveries = facts.faults.map((fault) => recoveryOf(fault, facts.starts));
  for (const fault of facts.faults) {
    if (fault.inFlight && takenOverAt(fault, facts.starts) === undefined) {
      violations.push(
        `the ${fault.inFlight} messages ${fault.worker} held when killed were never taken over`,
      );
    }
  }
  let recoveryMs = options.recoveryMs;
  if (recoveryMs === undefined && recoveries.some((ms) => ms !== undefined)) {
    recoveryMs = Math.max(...recoveries.filter((ms): ms is number => ms !== undefined));
  }
  const bound = options.recoveryBoundMs;
  if (bound !== undefined && options.recoveryMs !== undefined) {
    if (options.recoveryMs > bound) {
      violations.push(`recovery took ${options.recoveryMs} ms (bound ${bound} ms)`);
    }
  } else if (bound !== undefined) {
    facts.faults.forEach((fault, index) => {
      const ms = recoveries[index];
      const watched = fault.watch !== undefined && fault.watch.length > 0;
      if (ms === undefined && (watched || fault.worker === undefined)) {
        violations.push(`no recovery seen after "${fault.label}"`);
      } else if (ms !== undefined && ms > bound) {
        violations.push(`recovery after "${fault.label}" took ${ms} ms (bound ${bound} ms)`);
      }
    });
  }

  return {
    scenario: options.scenario,
    store: options.store,
    published: facts.published.size,
    handled: startsById.size,
    duplicates,
    lost: lost.length,
    dead: deadById.size,
    storedDespiteError,
    faults: facts.faults.length,
    recoveryMs,
    violations,
  };
}

/**
 * When the messages a killed worker held were taken over: when the watch saw its in-progress
 * mailbox empty, or else when the last of the ids it held was started by another worker. The
 * watch can miss the moment when the run ends just after the takeover (it stops when the
 * fleet stops); the handler starts are the ledger's own record of it.
 */
export function takenOverAt(fault: Fault, starts: HandlerStart[]): number | undefined {
  if (fault.recoveredAt !== undefined) {
    return fault.recoveredAt;
  }
  const held = fault.held ?? [];
  if (held.length === 0 || held.length < (fault.inFlight ?? 0)) {
    return undefined;
  }
  let latest = 0;
  for (const id of held) {
    const next = starts.find(
      (start) => start.id === id && start.at >= fault.at && start.worker !== fault.worker,
    );
    if (next === undefined) {
      return undefined;
    }
    latest = Math.max(latest, next.at);
  }
  return latest;
}

/**
 * How long one fault held handling up. With watched messages (published during or after the
 * fault): until the last of them first started, counted from the fault's end (its start, for a
 * fault that never ends on its own, such as a silenced connection). For a killed worker:
 * until every message it held was taken over by another worker, counted from the kill
 * (undefined when it held none). For an outage: from its end to the first handler start.
 */
export function recoveryOf(fault: Fault, starts: HandlerStart[]): number | undefined {
  if (fault.watch !== undefined && fault.watch.length > 0) {
    let latest = 0;
    for (const id of fault.watch) {
      const first = starts.find((start) => start.id === id && start.at >= fault.at);
      if (first === undefined) {
        return undefined;
      }
      latest = Math.max(latest, first.at);
    }
    return latest - fault.clearedAt;
  }
  if (fault.worker !== undefined) {
    const recoveredAt = takenOverAt(fault, starts);
    return recoveredAt === undefined ? undefined : recoveredAt - fault.at;
  }
  const next = starts.find((start) => start.at >= fault.clearedAt);
  return next === undefined ? undefined : next.at - fault.clearedAt;
}

function whereIs(id: string, state: GroupState, started: boolean): string {
  const places: Array<[string, { id: string }[]]> = [
    ['waiting', state.waiting],
    ['scheduled', state.scheduled],
    ['in flight', state.inFlight],
    ['dead', state.dead],
  ];
  const found = places.filter(([, copies]) => copies.some((copy) => copy.id === id));
  const where = found.map(([name]) => name).join(', ') || 'nowhere';
  return started ? `started, ${where}` : `never started, ${where}`;
}

function sample(items: string[]): string {
  const shown = items.slice(0, EXAMPLES).join(', ');
  return items.length > EXAMPLES ? `${shown}, ...` : shown;
}

// ---------------------------------------------------------------------------------------------
// The summary table

const COLUMNS = [
  'scenario',
  'store',
  'published',
  'handled',
  'duplicates',
  'lost',
  'dead',
  'faults',
  'recovery',
  'result',
] as const;

/** The reports as a plain-text table, one row each. */
export function formatTable(reports: RunReport[]): string {
  const rows = reports.map((report) => [
    report.scenario,
    report.store,
    String(report.published),
    String(report.handled),
    String(report.duplicates),
    String(report.lost),
    String(report.dead),
    String(report.faults),
    report.recoveryMs === undefined ? '-' : `${(report.recoveryMs / 1000).toFixed(2)} s`,
    report.violations.length === 0 ? 'ok' : `FAILED (${report.violations.length})`,
  ]);
  const widths = COLUMNS.map((name, index) =>
    Math.max(name.length, ...rows.map((row) => (row[index] as string).length)),
  );
  const numeric = (index: number): boolean => index >= 2 && index <= 8;
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, index) =>
        numeric(index)
          ? cell.padStart(widths[index] as number)
          : cell.padEnd(widths[index] as number),
      )
      .join('  ')
      .trimEnd();
  const failures = reports.flatMap((report) =>
    report.violations.map((violation) => `  ${report.scenario} / ${report.store}: ${violation}`),
  );
  return [
    line(COLUMNS),
    ...rows.map(line),
    ...(failures.length > 0 ? ['', 'broken guarantees:', ...failures] : []),
  ].join('\n');
}
