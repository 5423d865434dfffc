// The worker's memory against a documented bound (docs/security.md, "Sizes"): a real
// `mailbus consume` process is given a message with a 20 MB attachment, over the default
// 10 MB limit, and one with a header block of nearly 1 MB, within the limits, on a Maildir and
// on Dovecot. Its peak resident set (VmHWM) may exceed that of the same command handling one
// small message by no more than MEMORY_BOUND_BYTES.

import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { ConnectOptions } from '../../src/client.js';
import { CLI } from '../support/cli.js';
import { imapEnv, imapOptions, imapSession } from '../support/imap.js';
import { uniqueTopic } from '../support/store-conformance.js';
import { tempDir } from '../support/temp.js';

/** How much more than a small message's run the peak may be: see docs/security.md. */
const MEMORY_BOUND_BYTES = 16 * 1024 * 1024;

const ATTACHMENT_BYTES = 20 * 1024 * 1024;

/** A message with a 20 MB attachment (about 27 MB as base64). */
function attachmentMessage(id: string): Buffer {
  const content = Buffer.alloc(ATTACHMENT_BYTES);
  for (let i = 0; i < content.length; i += 1) {
    content[i] = (i * 7919) & 0xff;
  }
  const base64 = content.toString('base64').replace(/.{76}/g, '$&\r\n');
  return Buffer.from(
    `Message-ID: <${id}>\r\nMIME-Version: 1.0\r\n` +
      'Content-Type: multipart/mixed; boundary="part"\r\n\r\n' +
      '--part\r\nContent-Type: text/plain\r\n\r\nthe attachment follows\r\n' +
      '--part\r\nContent-Type: application/octet-stream; name="blob.bin"\r\n' +
      'Content-Transfer-Encoding: base64\r\n\r\n' +
      `${base64}\r\n--part--\r\n`,
  );
}

/** A message whose header block is nearly 1 MB: 800 fields of 1,200 bytes. */
function headerMessage(id: string): Buffer {
  const fields = Array.from({ length: 800 }, (_, i) => `X-Filler-${i}: ${'h'.repeat(1200)}\r\n`);
  return Buffer.from(`Message-ID: <${id}>\r\n${fields.join('')}\r\nsmall body\r\n`);
}

/** Runs `mailbus consume` until it has been idle for a while; returns its peak RSS in bytes. */
async function peakRss(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const child = spawn(process.execPath, [CLI, 'consume', ...args, '--wait', '3s'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  let peak = 0;
  const sample = (): void => {
    try {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const kb = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
      peak = Math.max(peak, kb * 1024);
    } catch {
      // The process has exited; its last sample stands.
    }
  };
  const timer = setInterval(sample, 20);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearInterval(timer);
  expect(code, stderr).toBe(0);
  expect(peak).toBeGreaterThan(0);
  return peak;
}

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

async function measure(
  name: string,
  options: ConnectOptions,
  args: string[],
  env: NodeJS.ProcessEnv,
  plant: (topic: string, raws: Buffer[]) => Promise<void>,
): Promise<void> {
  const bus = await connect(options);
  const small = uniqueTopic('memory-small');
  const large = uniqueTopic('memory-large');
  try {
    await bus.subscribe(small, 'default');
    await bus.subscribe(large, 'default');
    await plant(small, [Buffer.from('Message-ID: <small@x>\r\n\r\nsmall\r\n')]);
    await plant(large, [attachmentMessage('attachment@x'), headerMessage('header@x')]);

    const baseline = await peakRss([small, ...args], env);
    const peak = await peakRss([large, ...args], env);
    console.log(
      `${name}: worker peak RSS ${mb(peak)} with a 20 MB attachment and a 1 MB header, ` +
        `${mb(baseline)} with one small message (+${mb(peak - baseline)}, bound +${mb(MEMORY_BOUND_BYTES)})`,
    );

    // The attachment was quarantined unread, the big header handled.
    expect((await bus.stats(large))[0]).toMatchObject({ waiting: 0, handled: 1, quarantined: 1 });
    const [quarantined] = await bus.quarantine(large).list();
    expect(quarantined).toMatchObject({ id: 'attachment@x', reason: 'too-large' });
    expect(peak - baseline).toBeLessThan(MEMORY_BOUND_BYTES);
  } finally {
    await bus.close();
  }
}

describe('the memory of a worker', () => {
  it('stays within its bound on a Maildir', async () => {
    const url = `maildir:${join(tempDir('memory'), 'queue')}`;
    const root = url.slice('maildir:'.length);
    await measure('maildir', { url }, ['--url', url], {}, async (topic, raws) => {
      raws.forEach((raw, i) =>
        writeFileSync(join(root, `.${topic}.default`, 'new', `${i}.x`), raw),
      );
    });
  });

  it('stays within its bound on Dovecot', async () => {
    await measure('dovecot', imapOptions(), [], imapEnv(), async (topic, raws) => {
      const client = await imapSession();
      try {
        for (const raw of raws) {
          await client.append(`${topic}.default`, raw);
        }
      } finally {
        await client.logout();
      }
    });
  });
});
