import { defineConfig } from 'vitest/config';

// Integration tests talk to a real Dovecot and Postfix that the global setup installs and
// starts once per run; test files share them, each test in mailboxes of its own. The fault
// scenarios (test/faults/) collect their reports into one summary table printed at the end.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/mail-servers.global.ts', 'test/faults/faults.global.ts'],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
