import * as fs from 'node:fs';
const dir = fs.mkdtempSync('/tmp/sp-'); fs.mkdirSync(dir + '/tmp'); fs.mkdirSync(dir + '/spares');
const buf = Buffer.alloc(700, 'a');
const F = fs.constants.O_WRONLY | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW;
const F2 = fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW;
for (let i = 0; i < 300; i++) fs.closeSync(fs.openSync(`${dir}/spares/a${i}`, 'wx', 0o600));
const res = { rename: [], openTrunc: [], openNoTrunc: [], write: [], close: [] };
for (let i = 0; i < 300; i++) {
  await new Promise((r) => setTimeout(r, 20));
  let t = performance.now();
  fs.renameSync(`${dir}/spares/a${i}`, `${dir}/tmp/a${i}`); res.rename.push(performance.now() - t);
  t = performance.now(); const f = fs.openSync(`${dir}/tmp/a${i}`, i % 2 ? F : F2); (i % 2 ? res.openTrunc : res.openNoTrunc).push(performance.now() - t);
  t = performance.now(); fs.writeSync(f, buf); res.write.push(performance.now() - t);
  t = performance.now(); fs.closeSync(f); res.close.push(performance.now() - t);
}
const q = (x, f) => { const s = [...x].sort((a, b) => a - b); return s[Math.floor((s.length - 1) * f)].toFixed(3); };
for (const [n, x] of Object.entries(res)) console.log(n.padEnd(14), q(x, .5), q(x, .95));
fs.rmSync(dir, { recursive: true });
