import { connect } from '../dist/index.js';
import { MaildirClaimer } from '../dist/store/maildir/claimer.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
const root = fs.mkdtempSync('/tmp/lat-');
const bus = await connect({ url: `maildir:${root}`, noFsync: true });
await bus.subscribe('lat', 'default');
const orig = MaildirClaimer.prototype.claim;
let claimStart = 0, claimEnd = 0;
MaildirClaimer.prototype.claim = async function (max) { const t = performance.now(); const r = await orig.call(this, max); if (r.length) { claimStart = t; claimEnd = performance.now(); } return r; };
let resolveNext, hs = 0;
const worker = bus.consume('lat', (m) => { hs = performance.now(); resolveNext?.(); }, { group: 'default', concurrency: 8 });
let ev = 0;
const w = fs.watch(path.join(root, '.lat.default', 'new'), () => { if (!ev) ev = performance.now(); });
await new Promise((r) => setTimeout(r, 500));
const R = { publish: [], evToClaim: [], claim: [], claimToHandler: [], total: [] };
for (let i = 0; i < 300; i++) {
  const got = new Promise((r) => (resolveNext = r)); ev = 0;
  const t0 = performance.now(); await bus.publish('lat', { i }); const t1 = performance.now(); await got;
  R.publish.push(t1 - t0); R.evToClaim.push(claimStart - ev); R.claim.push(claimEnd - claimStart); R.claimToHandler.push(hs - claimEnd); R.total.push(hs - t0);
  await new Promise((r) => setTimeout(r, 20));
}
const q = (x, f) => { const s = [...x].sort((a, b) => a - b); return s[Math.floor((s.length - 1) * f)].toFixed(3); };
for (const [n, x] of Object.entries(R)) console.log(n.padEnd(15), q(x, .5), q(x, .95));
w.close(); await worker.close(); await bus.close(); fs.rmSync(root, { recursive: true, force: true });
