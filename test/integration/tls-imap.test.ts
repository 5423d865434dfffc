// TLS to Dovecot is verified by default: Dovecot's certificate is signed by the test's private
// CA (made with openssl by the harness), so without that CA a connection is refused, and only
// the explicit, loud --insecure-tls accepts it.

import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { imapEnv } from '../support/imap.js';

describe('TLS to the IMAP server', () => {
  it('refuses a certificate of an unknown CA, and accepts it only when told loudly', async () => {
    const env = { ...imapEnv(), MAILBUS_TLS_CA: '' };

    const refused = await runCli(['stats'], { env });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^mailbus: .*certificate/i);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);

    const insecure = await runCli(['stats', '--insecure-tls'], { env });
    expect(insecure.stderr).toBe(
      'mailbus: warning: TLS certificates are not verified (--insecure-tls)\n',
    );
    expect(insecure.code).toBe(0);

    const trusted = await runCli(['stats'], { env: imapEnv() });
    expect(trusted.code).toBe(0);
    expect(trusted.stderr).toBe('');
  });
});
