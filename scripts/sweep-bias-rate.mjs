// Measures loss-free routing-bias settings (128 × 512 C4 windows, batches of 8 windows, seed 0) and prints, per
// model and setting, MaxVio / σ / min tokens of the routing used in the second half vs natural. Used to choose the
// default --bias-update / --bias-rate (README "Choosing the bias rate"). Run after `npm run build`:
//   node scripts/sweep-bias-rate.mjs [models] [settings] [samples]
// models: fixture names (../shared/fixtures) or checkpoint directories, comma-separated (real shapes: see
// scripts/bench/make_real_shapes.py); settings: rule:rate, comma-separated; samples: windows (default 128).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { calibrate } from '../dist/index.js';

const shared = path.resolve(import.meta.dirname, '../../shared');
const data = path.join(shared, 'data/c4/c4-en-train.00000-of-01024.first1000.jsonl');
const models = (process.argv[2] ?? 'tiny-mixtral,tiny-deepseek-v3,tiny-qwen3-moe').split(',');
const settings = (
  process.argv[3] ?? 'sign:0.001,sign:0.003,sign:0.01,sign:0.03,linear:0.01,linear:0.03,linear:0.1,quantile:0.5,quantile:0.8,quantile:1'
).split(',');
const samples = Number(process.argv[4] ?? 128);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sweep-'));
const rows = [];
for (const name of models) {
  const model = name.includes('/') ? path.resolve(name) : path.join(shared, 'fixtures', name);
  for (const s of settings) {
    const [update, rate] = s.split(':');
    const r = await calibrate({
      model, data: [data], out: path.join(tmp, `${path.basename(model)}-${s}`),
      samples, seqLen: 512, batchTokens: 4096, routingBias: 'loss-free', biasUpdate: update, biasRate: Number(rate), device: 'cpu',
    });
    const x = r.summary;
    const row = { model: path.basename(model), samples, update, rate: Number(rate), natural2: x.natural_second_half.maxvio, used2: x.used_second_half.maxvio, ratio: x.used_second_half.maxvio / x.natural_second_half.maxvio, sigmaNat: x.natural.sigma, sigmaUsed2: x.used_second_half.sigma, minNat: x.natural.min_tokens, minUsed: x.used.min_tokens, seconds: r.seconds };
    rows.push(row);
    console.log(JSON.stringify(row));
    fs.rmSync(path.join(tmp, `${path.basename(model)}-${s}`), { recursive: true, force: true });
  }
}
fs.rmSync(tmp, { recursive: true, force: true });
