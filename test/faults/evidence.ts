// Keeps the ledger and the worker logs of a scenario that broke a guarantee, in test-artifacts/
// (git-ignored), before its private directory is removed: the evidence for the report.

import { cpSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunReport } from './ledger.js';
import type { ScenarioDir } from './scenario.js';

const EVIDENCE_DIR = join('test-artifacts', 'faults');

/** Copies the ledger and logs when the report has violations; returns where, if it did. */
export function keepEvidence(scenario: ScenarioDir, report: RunReport): string | undefined {
  if (report.violations.length === 0) {
    return undefined;
  }
  // Named for the run too: several runs of the suite may share a checkout.
  const run = new Date()
    .toISOString()
    .replace(/[^0-9]/g, '')
    .slice(0, 14);
  const scenarioName = `${report.scenario}-${report.store}`;
  const name = `${scenarioName.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${run}-${process.pid}`;
  const target = join(EVIDENCE_DIR, name);
  mkdirSync(target, { recursive: true });
  for (const [from, to] of [
    [scenario.ledger.dir, 'ledger'],
    [scenario.logDir, 'logs'],
  ] as const) {
    if (existsSync(from)) {
      cpSync(from, join(target, to), { recursive: true, force: true });
    }
  }
  writeFileSync(join(target, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  return target;
}
