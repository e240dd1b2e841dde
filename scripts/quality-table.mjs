// The issue-4 quality table: for every fixture, RTN / GPTQ / AGQ at 3 and 4 bits (group 128, asymmetric), calibrated
// on 128 × 512-token windows of the shared C4 slice (seed 0), with natural routing (--routing-bias none) and with
// loss-free routing bias; WikiText-2 test perplexity at seq 256, first 40 windows.
// Run after `npm run build`:  node scripts/quality-table.mjs [fixtures] > quality.jsonl
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { calibrate, evaluatePerplexity } from '../dist/index.js';
import { quantizeModel } from '../dist/pipeline/quantize.js';

const shared = path.resolve(import.meta.dirname, '../../shared');
const c4 = path.join(shared, 'data/c4/c4-en-train.00000-of-01024.first1000.jsonl');
const wiki = path.join(shared, 'data/wikitext-2-raw/wiki.test.raw');
const fixtures = (process.argv[2] ?? 'tiny-mixtral,tiny-deepseek-v3,tiny-qwen3-moe').split(',');
const routings = (process.argv[3] ?? 'none,loss-free').split(',');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'quality-'));
const ev = (model) => evaluatePerplexity({ model, data: wiki, seqLen: 256, maxWindows: 40, device: 'cpu' });
for (const name of fixtures) {
  const model = path.join(shared, 'fixtures', name);
  const fp = await ev(model);
  console.log(JSON.stringify({ fixture: name, variant: 'fp', ppl: fp.ppl }));
  for (const routing of routings) {
    const calib = await calibrate({ model, data: [c4], out: path.join(tmp, `${name}-${routing}-calib`), samples: 128, seqLen: 512, seed: 0, routingBias: routing, device: 'cpu' });
    for (const bits of [4, 3]) {
      for (const method of ['rtn', 'gptq', 'agq']) {
        const out = path.join(tmp, `${name}-${routing}-${method}-${bits}`);
        const t0 = performance.now();
        const q = await quantizeModel({ model, out, calib: calib.out, method, bits, groupSize: 128, sym: false, format: bits === 4 ? 'gptq' : 'dequantized', trueSequential: process.env.ONE_PASS ? false : true, timings: true, device: 'cpu' });
        const seconds = (performance.now() - t0) / 1000;
        const r = await ev(out);
        console.log(JSON.stringify({ fixture: name, routing, method, bits, ppl: r.ppl, quantize_seconds: seconds, solve_seconds: q.report.totals.seconds, expert_ratio: q.report.totals.expert_bytes_source / Math.max(1, q.report.totals.expert_bytes_quantized), fallbacks: q.report.fallbacks.length }));
        fs.rmSync(out, { recursive: true, force: true });
      }
    }
  }
}
fs.rmSync(tmp, { recursive: true, force: true });
