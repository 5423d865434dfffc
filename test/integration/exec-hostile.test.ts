// --exec with message content that is shell code: payload, key, subject and header values full
// of command substitutions and separators. The command reads them from stdin and the
// environment; if any of it had reached a shell as code, a marker file would exist.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

const root = tempDir('exec');
const env = { MAILBUS_URL: `maildir:${join(root, 'queue')}` };

describe('consume --exec with hostile content', () => {
  it('passes payload and metadata as data, and runs none of it', async () => {
    const topic = uniqueTopic('exec');
    const marker = join(root, 'pwned');
    const attacks = [
      `$(touch ${marker})`,
      `\`touch ${marker}\``,
      `; touch ${marker} #`,
      `| touch ${marker}`,
      `&& touch ${marker}`,
      `'; touch ${marker}; '`,
      `"; touch ${marker}; "`,
      `\${IFS}touch\${IFS}${marker}`,
    ];
    const attack = attacks.join(' ');
    const published = await runCli(
      [
        'publish',
        topic,
        JSON.stringify({ note: attack }),
        '--key',
        attacks.slice(0, 4).join(''),
        '--subject',
        attack,
        '--header',
        `X-Note=${attack}`,
      ],
      { env },
    );
    expect(published.stderr).toBe('');

    const out = join(root, 'out');
    const command =
      `cat > '${out}.payload'; printf '%s' "$MAILBUS_KEY" > '${out}.key'; ` +
      `printf '%s' "$MAILBUS_SUBJECT" > '${out}.subject'; ` +
      `printf '%s' "$MAILBUS_HEADERS" > '${out}.headers'`;
    const consumed = await runCli(['consume', topic, '--exec', command, '--max', '1'], { env });
    expect(consumed.stderr).toBe('');
    expect(consumed.code).toBe(0);

    expect(existsSync(marker)).toBe(false);
    expect(JSON.parse(readFileSync(`${out}.payload`, 'utf8'))).toEqual({ note: attack });
    expect(readFileSync(`${out}.key`, 'utf8')).toBe(attacks.slice(0, 4).join(''));
    expect(readFileSync(`${out}.subject`, 'utf8')).toBe(attack);
    expect(JSON.parse(readFileSync(`${out}.headers`, 'utf8'))['x-note']).toBe(attack);
  });
});
