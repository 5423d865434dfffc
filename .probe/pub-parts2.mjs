import * as fs from 'node:fs';
import { connect } from '../dist/index.js';
import { SpareFiles } from '../dist/store/maildir/spares.js';
let took = 0, miss = 0; const o = SpareFiles.prototype.take;
SpareFiles.prototype.take = function (p) { const r = o.call(this, p); r ? took++ : miss++; return r; };
const root = fs.mkdtempSync('/tmp/pp-');
const bus = await connect({ url: `maildir:${root}`, noFsync: true });
await bus.subscribe('lat', 'default');
const store = bus['store'];
const { composeMessage } = await import('../dist/message/compose.js');
const a = [], p = [];
for (let i = 0; i < 300; i++) {
  const m = await composeMessage('lat', { payload: { i } }, { from: 'a@b', maxMessageBytes: 1e6 });
  await new Promise((r) => setTimeout(r, 20));
  let t1 = performance.now();
  await store.append('lat', [m]);
  let t2 = performance.now();
  await new Promise((r) => setTimeout(r, 20));
  let t3 = performance.now();
  await bus.publish('lat', { i });
  let t4 = performance.now();
  a.push(t2 - t1); p.push(t4 - t3);
}
const q = (x, f) => { const s = [...x].sort((a, b) => a - b); return s[Math.floor((s.length - 1) * f)].toFixed(3); };
for (const [n, x] of Object.entries({ append: a, publish: p })) console.log(n.padEnd(12), q(x, .5), q(x, .95));
console.log({ took, miss });
await bus.close(); fs.rmSync(root, { recursive: true, force: true });
