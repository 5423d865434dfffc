import { composeMessage } from '../dist/message/compose.js';
import { decodeMessage } from '../dist/message/decode.js';
const m = await composeMessage('lat', { payload: { i: 1, s: 'x'.repeat(200) } }, { from: 'a@b', maxMessageBytes: 1e6 });
const d = [], c = [];
for (let i = 0; i < 300; i++) {
  let t = performance.now();
  await composeMessage('lat', { payload: { i } }, { from: 'a@b', maxMessageBytes: 1e6 });
  c.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
  t = performance.now();
  await decodeMessage(m.raw, { topic: 'lat', group: 'default' });
  d.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
}
const q = (x, f) => { const s = [...x].sort((a, b) => a - b); return s[Math.floor((s.length - 1) * f)].toFixed(3); };
console.log('compose', q(c, .5), q(c, .95)); console.log('decode', q(d, .5), q(d, .95));
for (let i = 0; i < 2000; i++) await decodeMessage(m.raw, { topic: 'lat', group: 'default' });
let t = performance.now(); for (let i = 0; i < 2000; i++) await decodeMessage(m.raw, { topic: 'lat', group: 'default' }); console.log('hot decode', ((performance.now()-t)/2000).toFixed(3));
t = performance.now(); for (let i = 0; i < 2000; i++) await composeMessage('lat', { payload: { i } }, { from: 'a@b', maxMessageBytes: 1e6 }); console.log('hot compose', ((performance.now()-t)/2000).toFixed(3));
