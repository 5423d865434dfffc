// Collects the fault scenarios' reports of one vitest run: each scenario prints its own rows
// when it ends, and appends them to a file that the global setup (faults.global.ts) prints
// as one table when the run is over.

import { appendFileSync } from 'node:fs';
import { inject } from 'vitest';
import { formatTable } from './ledger.js';
import type { RunReport } from './ledger.js';

/** Prints a scenario's reports and keeps them for the run's summary table. */
export function recordReports(reports: RunReport[]): void {
  console.log(`\n${formatTable(reports)}\n`);
  const file = inject('faultsSummary');
  if (file) {
    appendFileSync(file, reports.map((report) => `${JSON.stringify(report)}\n`).join(''));
  }
}
