import * as fs from 'node:fs';
const dir = fs.mkdtempSync('/tmp/sp-'); fs.mkdirSync(dir + '/tmp'); fs.mkdirSync(dir + '/spares');
const buf = Buffer.alloc(700, 'a');
const F = fs.constants.O_WRONLY | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW;
const res = { syncSpare: [], asyncSpare: [], syncCreate: [] };
for (let i = 0; i < 300; i++) {
  fs.closeSync(fs.openSync(`${dir}/spares/a${i}`, 'wx', 0o600)); fs.closeSync(fs.openSync(`${dir}/spares/b${i}`, 'wx', 0o600));
  await new Promise((r) => setTimeout(r, 20));
  let t = performance.now();
  fs.renameSync(`${dir}/spares/a${i}`, `${dir}/tmp/a${i}`); const f = fs.openSync(`${dir}/tmp/a${i}`, F); fs.writeSync(f, buf); fs.closeSync(f);
  res.syncSpare.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
  t = performance.now();
  fs.renameSync(`${dir}/spares/b${i}`, `${dir}/tmp/b${i}`); const g = await fs.promises.open(`${dir}/tmp/b${i}`, F); await g.write(buf); await g.close();
  res.asyncSpare.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
  t = performance.now(); const h = fs.openSync(`${dir}/tmp/c${i}`, 'wx', 0o600); fs.writeSync(h, buf); fs.closeSync(h); res.syncCreate.push(performance.now() - t);
}
const q = (x, f) => { const s = [...x].sort((a, b) => a - b); return s[Math.floor((s.length - 1) * f)].toFixed(3); };
for (const [n, x] of Object.entries(res)) console.log(n.padEnd(14), q(x, .5), q(x, .95));
fs.rmSync(dir, { recursive: true });
