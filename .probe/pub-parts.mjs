import { composeMessage } from '../dist/message/compose.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { connect } from '../dist/index.js';
const root = fs.mkdtempSync('/tmp/pp-');
const bus = await connect({ url: `maildir:${root}`, noFsync: true });
await bus.subscribe('lat', 'default');
const store = bus.store ?? bus['store'];
const N = 300; const c = [], a = [], w = [], p = [];
const dir = path.join(root, 'x'); fs.mkdirSync(dir + '/tmp', { recursive: true });
for (let i = 0; i < N; i++) {
  let t0 = performance.now();
  const m = await composeMessage('lat', { payload: { i } }, { from: 'a@b', maxMessageBytes: 1e6 });
  let t1 = performance.now();
  await store.append('lat', [m]);
  let t2 = performance.now();
  const fd = await fs.promises.open(dir + '/tmp/f' + i, 'wx', 0o600); await fd.write(m.raw); await fd.close();
  let t3 = performance.now();
  await bus.publish('lat', { i });
  let t4 = performance.now();
  c.push(t1 - t0); a.push(t2 - t1); w.push(t3 - t2); p.push(t4 - t3);
  await new Promise((r) => setTimeout(r, 20));
}
const q = (x, f) => { const s = [...x].sort((a, b) => a - b); return s[Math.floor((s.length - 1) * f)].toFixed(3); };
for (const [n, x] of Object.entries({ compose: c, append: a, rawWriteTmp: w, publish: p })) console.log(n.padEnd(12), q(x, .5), q(x, .95));
await bus.close(); fs.rmSync(root, { recursive: true, force: true });
