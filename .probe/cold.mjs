const o = { a: 1, b: 'x'.repeat(200), c: [1,2,3] };
function work() { let s = 0; for (let i = 0; i < 300; i++) s += JSON.stringify(o).length; return s; }
for (let i = 0; i < 5000; i++) work();
let t = performance.now(); for (let i = 0; i < 1000; i++) work(); console.log('hot', ((performance.now()-t)/1000).toFixed(3));
for (const gap of [0, 1, 5, 20]) {
const x = [];
for (let i = 0; i < 200; i++) { if (gap) await new Promise(r => setTimeout(r, gap)); else await new Promise(r => setImmediate(r)); t = performance.now(); work(); x.push(performance.now()-t); }
x.sort((a,b)=>a-b); console.log('gap', gap, 'p50', x[100].toFixed(3));
}
