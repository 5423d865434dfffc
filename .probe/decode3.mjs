import { composeMessage } from '../dist/message/compose.js';
import { decodeMessage } from '../dist/message/decode.js';
import PostalMime from 'postal-mime';
const m = await composeMessage('lat', { payload: { i: 1, s: 'x'.repeat(200) } }, { from: 'a@b', maxMessageBytes: 1e6 });
for (let i = 0; i < 3000; i++) { await decodeMessage(m.raw, { topic: 'lat', group: 'default' }); await PostalMime.parse(m.raw); }
const d = [], p = [], j = [];
const json = JSON.stringify({ i: 1, s: 'x'.repeat(200) });
for (let i = 0; i < 200; i++) {
  await new Promise((r) => setTimeout(r, 20));
  let t = performance.now(); await PostalMime.parse(m.raw); p.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
  t = performance.now(); await decodeMessage(m.raw, { topic: 'lat', group: 'default' }); d.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
  t = performance.now(); JSON.parse(json); j.push(performance.now() - t);
}
const q = (x, f) => { const s = [...x].sort((a, b) => a - b); return s[Math.floor((s.length - 1) * f)].toFixed(3); };
console.log('postal', q(p, .5), 'decode', q(d, .5), 'json', q(j, .5));
console.log(m.raw.toString());
