// The fault suite's checker on made-up ledgers: it must see every kind of broken guarantee, so
// that a scenario cannot pass because its checker looked away. And the handler command must
// write the lines the checker reads.

import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Ledger, checkRun, formatTable, recoveryOf } from './ledger.js';
import type { GroupState, StoredCopy } from './mailboxes.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) {
    rmSync(dir, { recursive: true, force: true });
  }
});

function ledger(): Ledger {
  const dir = mkdtempSync(join(tmpdir(), 'mailbus-ledger-test-'));
  dirs.push(dir);
  return new Ledger(dir);
}

function copies(ids: string[], attempts = 0, lastError?: string): StoredCopy[] {
  return ids.map((id) => ({ id, attempts, lastError, file: `/x/${id}` }));
}

function state(parts: Partial<GroupState> = {}): GroupState {
  return { waiting: [], scheduled: [], inFlight: [], archived: [], dead: [], ...parts };
}

/** A start line as a worker's handler command writes it. */
function start(l: Ledger, worker: string, at: number, id: string, attempt = 1): void {
  appendFileSync(l.handlerFile(worker), `S\t${at}\t${id}\t${attempt}\t100\t200\n`);
}

describe('the fault ledger checker', () => {
  it('passes a clean run', () => {
    const l = ledger();
    l.published(['a', 'b']);
    start(l, 'w1', 1, 'a');
    start(l, 'w2', 2, 'b');
    const report = checkRun(l, state({ archived: copies(['a', 'b']) }), {
      scenario: 's',
      store: 'x',
      faultFree: true,
    });
    expect(report).toMatchObject({ published: 2, handled: 2, duplicates: 0, lost: 0 });
    expect(report.violations).toEqual([]);
  });

  it('counts a message never acked as lost, and says where it is', () => {
    const l = ledger();
    l.published(['a', 'b']);
    start(l, 'w1', 1, 'a');
    const report = checkRun(l, state({ archived: copies(['a']), waiting: copies(['b']) }), {
      scenario: 's',
      store: 'x',
    });
    expect(report.lost).toBe(1);
    expect(report.violations.join('\n')).toMatch(
      /1 published messages were lost: b \(never started, waiting\)/,
    );
    expect(report.violations.join('\n')).toMatch(/left unsettled: b waiting/);
  });

  it('refuses any duplicate in a fault-free run', () => {
    const l = ledger();
    l.published(['a']);
    start(l, 'w1', 1, 'a');
    start(l, 'w2', 2, 'a');
    const report = checkRun(l, state({ archived: copies(['a']) }), {
      scenario: 's',
      store: 'x',
      faultFree: true,
    });
    expect(report.duplicates).toBe(1);
    expect(report.violations.join('\n')).toMatch(/duplicate handler starts in a fault-free run/);
  });

  it('allows a duplicate only when a kill or an outage interrupted the earlier start', () => {
    const l = ledger();
    l.published(['a', 'b', 'c']);
    start(l, 'w1', 1_000, 'a'); // w1 was killed: explained
    start(l, 'w2', 2_000, 'a');
    start(l, 'w2', 50_000, 'b'); // during the outage: explained
    start(l, 'w3', 51_000, 'b');
    start(l, 'w2', 90_000, 'c'); // long after any fault: not explained
    start(l, 'w3', 91_000, 'c');
    l.fault({ label: 'outage', at: 49_000, clearedAt: 52_000 });
    const report = checkRun(l, state({ archived: copies(['a', 'b', 'c']) }), {
      scenario: 's',
      store: 'x',
      killedWorkers: new Set(['w1']),
    });
    expect(report.duplicates).toBe(3);
    expect(report.violations).toEqual([
      '1 messages were started again although no fault interrupted the earlier attempt: c',
    ]);
  });

  it('allows the duplicate of a message a killed worker held, whoever handled both copies', () => {
    const l = ledger();
    l.published(['h', 'x']);
    // w4 held h (taken over from a dead worker) when it was killed: its release may have
    // stored the new copy before removing the old, and both copies were handled by others.
    l.fault({ label: 'kill -9 w4', at: 10_000, clearedAt: 10_000, worker: 'w4', held: ['h'] });
    start(l, 'w2', 20_000, 'h', 2);
    start(l, 'w3', 22_000, 'h', 2);
    start(l, 'w2', 30_000, 'x');
    start(l, 'w3', 31_000, 'x');
    const report = checkRun(l, state({ archived: copies(['h', 'x']) }), {
      scenario: 's',
      store: 'x',
      killedWorkers: new Set(['w4']),
    });
    expect(report.duplicates).toBe(2);
    expect(report.violations).toEqual([
      '1 messages were started again although no fault interrupted the earlier attempt: x',
    ]);
  });

  it('expects poison messages to die after exactly maxAttempts, saying why', () => {
    const l = ledger();
    l.published(['p', 'q']);
    for (const attempt of [1, 2, 3]) {
      start(l, 'w1', attempt, 'p', attempt);
    }
    start(l, 'w1', 1, 'q', 1);
    const report = checkRun(
      l,
      state({ dead: [...copies(['p'], 3, 'handler timed out after 600 ms'), ...copies(['q'], 2)] }),
      {
        scenario: 's',
        store: 'x',
        poison: {
          ids: new Set(['p', 'q']),
          maxAttempts: 3,
          lastError: new Map([['p', /timed out/]]),
        },
      },
    );
    expect(report.violations).toEqual([
      'poison message q was started 1 times, not 3',
      'dead letter q says 2 attempts, not 3',
    ]);
  });

  it('flags a dead letter nobody expected, a phantom message and torn lines', () => {
    const l = ledger();
    l.published(['a']);
    start(l, 'w1', 1, 'a');
    start(l, 'w1', 2, 'ghost');
    appendFileSync(l.handlerFile('w1'), 'S\t12');
    const report = checkRun(l, state({ dead: copies(['a'], 5, 'boom') }), {
      scenario: 's',
      store: 'x',
    });
    expect(report.violations).toEqual([
      '1 ledger lines were torn',
      '1 messages were handled that nobody published: ghost',
      '1 published messages were lost: a (started, dead)',
      'message a was dead-lettered: boom',
    ]);
  });

  it('measures recovery per kind of fault, and holds it to a bound', () => {
    const starts = [
      { at: 5_000, id: 'x', attempt: 1, worker: 'w2', handlerPid: 1 },
      { at: 9_000, id: 'y', attempt: 1, worker: 'w2', handlerPid: 1 },
    ];
    expect(
      recoveryOf(
        { label: 'k', at: 1_000, clearedAt: 1_000, worker: 'w1', recoveredAt: 4_000 },
        starts,
      ),
    ).toBe(3_000);
    expect(recoveryOf({ label: 'o', at: 1_000, clearedAt: 3_000 }, starts)).toBe(2_000);
    expect(recoveryOf({ label: 'w', at: 1_000, clearedAt: 2_000, watch: ['x', 'y'] }, starts)).toBe(
      7_000,
    );
    expect(
      recoveryOf({ label: 'w', at: 1_000, clearedAt: 2_000, watch: ['z'] }, starts),
    ).toBeUndefined();

    // A kill whose watch missed the takeover: the starts of what it held by others count.
    const kill = { label: 'k', at: 1_000, clearedAt: 1_000, worker: 'w1', inFlight: 2 };
    expect(recoveryOf({ ...kill, held: ['x', 'y'] }, starts)).toBe(8_000);
    expect(recoveryOf({ ...kill, held: ['x', 'z'] }, starts)).toBeUndefined();
    expect(recoveryOf({ ...kill, held: ['x'] }, starts)).toBeUndefined();
    expect(recoveryOf({ ...kill, worker: 'w2', held: ['x', 'y'] }, starts)).toBeUndefined();

    const l = ledger();
    l.fault({ label: 'silence', at: 1_000, clearedAt: 1_000, watch: ['never'] });
    const report = checkRun(l, state(), { scenario: 's', store: 'x', recoveryBoundMs: 500 });
    expect(report.violations).toEqual(['no recovery seen after "silence"']);
  });

  it('runs a handler command that records its start and end, hangs or crashes on demand', () => {
    const l = ledger();
    const command = l.handlerCommand('w1', { hang: true, segv: true });
    const env = { ...process.env, MAILBUS_ID: 'm1@mailbus', MAILBUS_ATTEMPT: '2' };
    const ok = spawnSync('/bin/sh', ['-c', command], { env, input: '{"n":1}' });
    expect(ok.status).toBe(0);
    const segv = spawnSync('/bin/sh', ['-c', command], { env, input: '{"kind":"segv"}' });
    expect(segv.signal).toBe('SIGSEGV');
    const hang = spawnSync('/bin/sh', ['-c', command], {
      env,
      input: '{"kind":"hang"}',
      timeout: 300,
    });
    expect(hang.signal).toBe('SIGTERM');

    const facts = l.read();
    expect(facts.starts.map((s) => [s.id, s.attempt, s.worker])).toEqual([
      ['m1@mailbus', 2, 'w1'],
      ['m1@mailbus', 2, 'w1'],
      ['m1@mailbus', 2, 'w1'],
    ]);
    expect(facts.ends).toHaveLength(1);
    expect(facts.tornLines).toBe(0);
    expect(formatTable([checkRun(l, state(), { scenario: 's', store: 'x' })])).toMatch(/^scenario/);
  });
});
