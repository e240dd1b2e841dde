// Measures loss-free routing-bias settings on every fixture (128 × 512 C4 windows, batches of 8 windows, seed 0)
// and prints MaxVio / σ / min tokens of the routing used in the second half vs natural. Used to choose the default
// --bias-rate (README "Choosing the bias rate"). Run after `npm run build`: node scripts/sweep-bias-rate.mjs
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { calibrate } from '../dist/index.js';

const shared = path.resolve(import.meta.dirname, '../../shared');
const data = path.join(shared, 'data/c4/c4-en-train.00000-of-01024.first1000.jsonl');
const fixtures = (process.argv[2] ?? 'tiny-mixtral,tiny-deepseek-v3,tiny-qwen3-moe').split(',');
const settings = (process.argv[3] ?? 'sign:0.001,sign:0.003,sign:0.01,sign:0.03,linear:0.01,linear:0.03,linear:0.1').split(',');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sweep-'));
const rows = [];
for (const name of fixtures) {
  for (const s of settings) {
    const [update, rate] = s.split(':');
    const r = await calibrate({
      model: path.join(shared, 'fixtures', name), data: [data], out: path.join(tmp, `${name}-${s}`),
      samples: 128, seqLen: 512, batchTokens: 4096, routingBias: 'loss-free', biasUpdate: update, biasRate: Number(rate), device: 'cpu',
    });
    const x = r.summary;
    const row = { fixture: name, update, rate: Number(rate), natural2: x.natural_second_half.maxvio, used2: x.used_second_half.maxvio, ratio: x.used_second_half.maxvio / x.natural_second_half.maxvio, sigmaNat: x.natural.sigma, sigmaUsed2: x.used_second_half.sigma, minNat: x.natural.min_tokens, minUsed: x.used.min_tokens, seconds: r.seconds };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
}
fs.rmSync(tmp, { recursive: true, force: true });
