// vitest globalSetup for the fault scenarios (test/faults/):
// - a snapshot of the built command line (dist/) that their worker processes run. A scenario
//   starts workers for many minutes; a rebuild of dist/ meanwhile (another `npm run build` in
//   the same checkout) would otherwise hand a new worker half-written files.
// - a file that the scenarios append their reports to, printed as one summary table (and kept
//   in test-artifacts/faults-summary.txt) once every test file has run.

import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TestProject } from 'vitest/node';
import { formatTable } from './ledger.js';
import type { RunReport } from './ledger.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The JSON-lines file of the run's fault reports. */
    faultsSummary: string;
    /** main.js of the snapshot of dist/ that fault workers run. */
    faultsCli: string;
  }
}

const ARTIFACTS = 'test-artifacts';
const SUMMARY_FILE = join(ARTIFACTS, 'faults-summary.txt');

export default function setup(project: TestProject): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'mailbus-faults-summary-'));
  const file = join(dir, 'reports.jsonl');
  writeFileSync(file, '');
  project.provide('faultsSummary', file);

  // Inside the checkout, so that the snapshot finds node_modules as dist/ does.
  mkdirSync(ARTIFACTS, { recursive: true });
  const snapshot = mkdtempSync(join(ARTIFACTS, 'faults-cli-'));
  cpSync('dist', snapshot, { recursive: true });
  project.provide('faultsCli', resolve(snapshot, 'cli', 'main.js'));

  return () => {
    rmSync(snapshot, { recursive: true, force: true });
    const reports = readFileSync(file, 'utf8')
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => JSON.parse(line) as RunReport);
    rmSync(dir, { recursive: true, force: true });
    if (reports.length === 0) {
      return;
    }
    const size = process.env.FAULTS_FULL === '1' ? 'full' : 'CI';
    const table = formatTable(reports);
    console.log(`\nfault scenarios (${size} size)\n\n${table}\n`);
    writeFileSync(SUMMARY_FILE, `${new Date().toISOString()}, ${size} size\n\n${table}\n`);
  };
}
