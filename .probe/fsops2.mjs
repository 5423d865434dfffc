import * as fs from 'node:fs';
const dir = fs.mkdtempSync((process.env.D ?? '/tmp') + '/fo-'); fs.mkdirSync(dir + '/tmp');
const buf = Buffer.alloc(700, 'a');
const res = { open: [], write: [], close: [], openNoWrite: [], closeEmpty: [] , unlink: []};
for (let i = 0; i < 300; i++) {
  let t = performance.now();
  const f = fs.openSync(`${dir}/tmp/s${i}`, 'wx', 0o600); res.open.push(performance.now() - t);
  t = performance.now(); fs.writeSync(f, buf); res.write.push(performance.now() - t);
  t = performance.now(); fs.closeSync(f); res.close.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
  t = performance.now(); const g = fs.openSync(`${dir}/tmp/e${i}`, 'wx', 0o600); res.openNoWrite.push(performance.now() - t);
  t = performance.now(); fs.closeSync(g); res.closeEmpty.push(performance.now() - t);
  t = performance.now(); fs.unlinkSync(`${dir}/tmp/e${i}`); res.unlink.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
}
const q = (x, f) => { const s = [...x].sort((a, b) => a - b); return s[Math.floor((s.length - 1) * f)].toFixed(3); };
for (const [n, x] of Object.entries(res)) console.log(n.padEnd(14), q(x, .5), q(x, .95));
fs.rmSync(dir, { recursive: true });
