// Runs one request against a real llama.cpp (node-llama-cpp's prebuilt CPU binary, tools/llama-cpp) and prints one
// JSON line. A child process of its own, because a GGML_ASSERT inside llama.cpp aborts the whole process.
//   {"cmd":"logits","model":F,"ids":[..],"out":F}  full-vocabulary logits of every position → float32 file [n, vocab]
//   {"cmd":"ppl","model":F,"text":F,"seqLen":L,"windows":W}  the README's perplexity protocol, with llama.cpp's tokenizer
//   {"cmd":"tokenize","model":F,"text":F[,"out":F]}  token count and the first 64 ids (all ids → int32 file `out`);
//     {"vocabOnly":true} loads only the tokenizer
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const { getLlama } = await import(path.join(here, '../../tools/llama-cpp/node_modules/node-llama-cpp/dist/index.js'));
const req = JSON.parse(process.argv[2]);
// CPU only (a software Vulkan would otherwise be picked), never a source build; F32 KV cache and no flash attention
// so that the only differences from a float forward are the weights and llama.cpp's activation quantization.
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
const model = await llama.loadModel({ modelPath: req.model, gpuLayers: 0, vocabOnly: req.vocabOnly === true });
const context = async (n) =>
  model.createContext({ contextSize: n, batchSize: n, sequences: 1, threads: 1, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false });
let out;
if (req.cmd === 'logits') {
  // One position more than the ids: with a context exactly as long, the last position's logits were off (by ~2 with 256
  // ids on a real-shape model; every other position within 1.4e-5).
  const ctx = await context(Math.max(64, req.ids.length + 1));
  const res = await ctx.getSequence().controlledEvaluate(req.ids.map((t) => [t, { generateNext: { logits: true } }]));
  const vocab = res[0].next.logits.size;
  const all = new Float32Array(req.ids.length * vocab);
  res.forEach((r, i) => {
    for (const [tok, v] of r.next.logits) all[i * vocab + tok] = v;
  });
  fs.writeFileSync(req.out, Buffer.from(all.buffer));
  out = { vocab, n: req.ids.length, release: llama.llamaCppRelease };
} else if (req.cmd === 'ppl') {
  const ids = model.tokenize(fs.readFileSync(req.text, 'utf8'), false);
  const L = req.seqLen;
  const windows = Math.min(req.windows, Math.floor(ids.length / L));
  const ctx = await context(L);
  const seq = ctx.getSequence();
  let nll = 0;
  let n = 0;
  for (let w = 0; w < windows; w++) {
    const win = ids.slice(w * L, (w + 1) * L);
    await seq.clearHistory();
    // Per position: the target's logit, the top logit and Σ exp(logit − top) (totalLogitWeight).
    const res = await seq.controlledEvaluate(win.map((t, i) => (i < L - 1 ? [t, { generateNext: { logits: { filter: { tokens: [win[i + 1]], includeTop: 1 } }, totalLogitWeight: true } }] : t)));
    for (let i = 0; i < L - 1; i++) {
      const r = res[i].next;
      let max = -Infinity;
      for (const v of r.logits.values()) max = Math.max(max, v);
      nll += Math.log(r.totalLogitWeight) - (r.logits.get(win[i + 1]) - max);
      n++;
    }
  }
  out = { ppl: Math.exp(nll / n), nll: nll / n, predictions: n, windows, tokens: ids.length };
} else if (req.cmd === 'tokenize') {
  const ids = model.tokenize(fs.readFileSync(req.text, 'utf8'), false);
  if (req.out) fs.writeFileSync(req.out, Buffer.from(Int32Array.from(ids).buffer));
  out = { tokens: ids.length, first: Array.from(ids.slice(0, 64)) };
} else throw new Error(`unknown request ${req.cmd}`);
process.stdout.write(`${JSON.stringify(out)}\n`);
await model.dispose();
