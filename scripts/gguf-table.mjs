// GGUF quality table (issue 12): per trained fixture, llama.cpp's own perplexity (WikiText-2 test, 40 × 256, the
// README protocol) of moe-quant GGUF files — F32, RTN / GPTQ / AGQ Q4_0, AGQ Q4_1 and Q8_0 — and, on a generated
// Mixtral-layout checkpoint with K % 256 == 0, F32 and RTN / GPTQ / AGQ Q4_K; KL divergence from the fp model and
// top-1 agreement (moe-quant's forward of the file vs the fp checkpoint, same windows). Calibration: 128 × 512 C4
// windows, seed 0, default loss-free routing bias, shared by all methods of a fixture.
// Needs `npm run build` and `npm run llama:install`:  node scripts/gguf-table.mjs [fixtures] > gguf.jsonl
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { calibrate, evaluateKl } from '../dist/index.js';
import { generateCheckpoint, KQUANT_MIXTRAL_CONFIG, writeByteTokenizer } from '../dist/bench/synth.js';
import { quantizeModel } from '../dist/pipeline/quantize.js';

const root = path.resolve(import.meta.dirname, '..');
const shared = path.resolve(root, '../shared');
const c4 = path.join(shared, 'data/c4/c4-en-train.00000-of-01024.first1000.jsonl');
const wiki = path.join(shared, 'data/wikitext-2-raw/wiki.test.raw');
const fixtures = (process.argv[2] ?? 'tiny-qwen3-moe,tiny-mixtral,tiny-deepseek-v3,kquant-mixtral').split(',');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gguf-table-'));

function llamaPpl(file) {
  const r = spawnSync(process.execPath, [path.join(root, 'test/llama/worker.mjs'), JSON.stringify({ cmd: 'ppl', model: file, text: wiki, seqLen: 256, windows: 40 })], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()).ppl;
}

for (const name of fixtures) {
  let model = path.join(shared, 'fixtures', name);
  let types = [['f32', 'rtn'], ['q4_0', 'rtn'], ['q4_0', 'gptq'], ['q4_0', 'agq'], ['q4_1', 'rtn'], ['q4_1', 'agq'], ['q8_0', 'rtn'], ['q8_0', 'agq']];
  if (name === 'kquant-mixtral') {
    model = path.join(tmp, name);
    generateCheckpoint(model, KQUANT_MIXTRAL_CONFIG, 'bench', 0.05);
    writeByteTokenizer(model, KQUANT_MIXTRAL_CONFIG.vocab_size);
    types = [['f32', 'rtn'], ['q4_k', 'rtn'], ['q4_k', 'gptq'], ['q4_k', 'agq'], ['q4_0', 'agq']];
  }
  const calib = await calibrate({ model, data: [c4], out: path.join(tmp, `${name}-calib`), samples: 128, seqLen: 512, seed: 0, device: 'cpu' });
  for (const [type, method] of types) {
    const out = path.join(tmp, `${name}-${type}-${method}`);
    const t0 = performance.now();
    const q = await quantizeModel({ model, out, calib: type === 'f32' ? undefined : calib.out, method, format: 'gguf', gguf: { type }, device: 'cpu' });
    const seconds = (performance.now() - t0) / 1000;
    const file = q.files.model[0];
    const ppl = llamaPpl(file);
    // KL(fp ‖ file) and top-1 agreement: moe-quant's forward of the file against the fp checkpoint, same windows.
    const d = (await evaluateKl({ model: file, reference: model, data: wiki, seqLen: 256, maxWindows: 40, device: 'cpu' })).reference;
    console.log(JSON.stringify({ fixture: name, type, method: type === 'f32' ? null : method, ppl_llama_cpp: ppl, kl: d.kl.mean, top1_vs_fp: d.top1_agreement, bytes: fs.statSync(file).size, quantize_seconds: seconds }));
    fs.rmSync(out, { recursive: true, force: true });
  }
}
fs.rmSync(tmp, { recursive: true, force: true });
