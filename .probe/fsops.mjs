import * as fs from 'node:fs';
const dir = fs.mkdtempSync('/tmp/fo-'); fs.mkdirSync(dir + '/tmp'); fs.mkdirSync(dir + '/new'); fs.mkdirSync(dir + '/g'); 
const buf = Buffer.alloc(700, 'a');
const res = { asyncWrite: [], syncWrite: [], link: [], rename: [], writeFileSync: [], statRoot: [] };
for (let i = 0; i < 300; i++) {
  let t = performance.now();
  const fd = await fs.promises.open(`${dir}/tmp/a${i}`, 'wx', 0o600); await fd.write(buf); await fd.close();
  res.asyncWrite.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
  t = performance.now();
  const f = fs.openSync(`${dir}/tmp/s${i}`, 'wx', 0o600); fs.writeSync(f, buf); fs.closeSync(f);
  res.syncWrite.push(performance.now() - t);
  t = performance.now(); fs.linkSync(`${dir}/tmp/s${i}`, `${dir}/g/s${i}`); res.link.push(performance.now() - t);
  t = performance.now(); fs.renameSync(`${dir}/tmp/s${i}`, `${dir}/new/s${i}`); res.rename.push(performance.now() - t);
  t = performance.now(); fs.statSync(dir); res.statRoot.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
  t = performance.now(); fs.writeFileSync(`${dir}/tmp/w${i}`, buf, { flag: 'wx', mode: 0o600 }); res.writeFileSync.push(performance.now() - t);
  await new Promise((r) => setTimeout(r, 20));
}
const q = (x, f) => { const s = [...x].sort((a, b) => a - b); return s[Math.floor((s.length - 1) * f)].toFixed(3); };
for (const [n, x] of Object.entries(res)) console.log(n.padEnd(14), q(x, .5), q(x, .95));
fs.rmSync(dir, { recursive: true });
