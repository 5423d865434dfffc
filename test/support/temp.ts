// Temporary directories for tests, removed when the test file is done.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const made: string[] = [];

// Registered once per test file, as it imports this module: a hook registered from inside a
// test would never run, and tests make directories of their own as they go.
afterAll(() => {
  for (const dir of made.splice(0)) {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A fresh directory under the system's temp dir, deleted after the file's tests. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `mailbus-${prefix}-`));
  made.push(dir);
  return dir;
}
