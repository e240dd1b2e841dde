/**
 * The engine on onnxruntime's WebGPU provider against the same references as the CPU suite. In CI this runs on Mesa
 * lavapipe (a software Vulkan, see scripts/software-vulkan.sh); on a machine with a GPU, on the GPU.
 * Skips (saying why) when WebGPU is unavailable, fails instead under MOE_QUANT_EXPECT_WEBGPU=1.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { randn, seededRandom } from '../../src/calibration/samples.js';
import { DEFAULT_EVAL_DATA, DEFAULT_MODEL_DIR } from '../../src/defaults.js';
import { Decoder } from '../../src/engine/decoder.js';
import { createEngine } from '../../src/engine/engine.js';
import { evaluateKl } from '../../src/eval/kl.js';
import { evaluatePerplexity } from '../../src/eval/perplexity.js';
import { concatTree, projection } from '../../src/graph/blocks.js';
import { GraphBuilder, OnnxType } from '../../src/graph/builder.js';
import { resolveDevice, sessionOptions } from '../../src/graph/session.js';
import { maxAbsDiff, readReference } from '../engine/helpers.js';
import { FIXTURES } from '../paths.js';
import { EXPECT_WEBGPU } from './software-vulkan.js';

const GENERATED = path.resolve(__dirname, '../fixtures/generated');
const GPTQ_INTEROP = path.resolve(__dirname, '../fixtures/gptq-interop');

const webgpu = await resolveDevice('webgpu').then(
  (choice) => ({ choice, reason: '' }),
  (e: Error) => ({ choice: null, reason: e.message }),
);
const run = webgpu.choice !== null || EXPECT_WEBGPU;
if (!run) console.warn(`WebGPU tests skipped: ${webgpu.reason}`);
else if (webgpu.choice) console.log(webgpu.choice.note);

function fixtureDirs(): string[] {
  return [FIXTURES, GENERATED].flatMap((root) =>
    fs
      .readdirSync(root)
      .sort()
      .map((d) => path.join(root, d))
      .filter((d) => fs.existsSync(path.join(d, 'reference.safetensors'))),
  );
}

describe.skipIf(!run)('WebGPU', () => {
  it('is available', () => {
    expect(webgpu.reason).toBe('');
    expect(webgpu.choice!.device).toBe('webgpu');
  });

  it('--device auto never picks a software adapter', async () => {
    const auto = await resolveDevice('auto');
    if (webgpu.choice!.software) expect(auto.device).not.toBe('webgpu');
    else expect(auto.software).toBe(false);
  });

  const dirs = fixtureDirs();
  it('finds the 3 trained and 8 generated fixtures', () => {
    expect(dirs.filter((d) => d.startsWith(FIXTURES))).toHaveLength(3);
    expect(dirs.filter((d) => d.startsWith(GENERATED))).toHaveLength(8);
  });
  for (const dir of dirs) {
    it(`${path.basename(dir)}: reference logits within 1e-3`, async () => {
      const { ids, logits: want } = readReference(dir);
      const engine = await createEngine(dir, { device: 'webgpu' });
      try {
        expect(engine.device).toBe('webgpu');
        const out = await engine.forward.run([ids], { head: 'logits' });
        const err = maxAbsDiff(out.logits!, want);
        console.log(`webgpu ${path.basename(dir)} max|Δlogit| = ${err.toExponential(2)}`);
        expect(err).toBeLessThan(1e-3);
      } finally {
        await engine.close();
      }
    });
  }

  for (const name of ['tiny-mixtral', 'tiny-deepseek-v3', 'tiny-qwen3-moe']) {
    it(`${name}: KV-cache decoding (prefill 40, then one token at a time) reproduces the reference logits`, async () => {
      const dir = path.join(FIXTURES, name);
      const { ids, logits: want } = readReference(dir);
      const engine = await createEngine(dir, { device: 'webgpu' });
      try {
        const V = engine.model.spec.vocabSize;
        const other = ids.map((t) => (t + 7) % V);
        const dec = new Decoder(engine.forward, 2);
        await dec.step([ids.subarray(0, 40), other.subarray(0, 40)]);
        let err = 0;
        for (let p = 40; p < 64; p++) {
          const logits = await dec.step([ids.subarray(p, p + 1), other.subarray(p, p + 1)]);
          for (let v = 0; v < V; v++) err = Math.max(err, Math.abs(logits[v]! - want[p * V + v]!));
        }
        console.log(`webgpu decode ${name} max|Δlogit| = ${err.toExponential(2)}`);
        expect(err).toBeLessThan(1e-3);
      } finally {
        await engine.close();
      }
    });
  }

  it('perplexity of the bundled model equals the CPU provider\'s (relative ≤ 1e-6)', async () => {
    const opts = { model: DEFAULT_MODEL_DIR, data: DEFAULT_EVAL_DATA, seqLen: 128, maxWindows: 4, workers: 1 };
    const [gpu, cpu] = [await evaluatePerplexity({ ...opts, device: 'webgpu' }), await evaluatePerplexity({ ...opts, device: 'cpu' })];
    expect(gpu.device).toBe('webgpu');
    const rel = Math.abs(gpu.ppl - cpu.ppl) / cpu.ppl;
    console.log(`webgpu ppl ${gpu.ppl} vs cpu ${cpu.ppl}: relative ${rel.toExponential(2)}`);
    expect(rel).toBeLessThanOrEqual(1e-6);
  });

  it('eval --reference: the comparison head on WebGPU gives the CPU provider\'s KL, top-1 and perplexities', async () => {
    const opts = { model: path.join(FIXTURES, 'tiny-mixtral'), reference: DEFAULT_MODEL_DIR, data: DEFAULT_EVAL_DATA, seqLen: 128, maxWindows: 4, workers: 1 };
    const [gpu, cpu] = [await evaluateKl({ ...opts, device: 'webgpu' }), await evaluateKl({ ...opts, device: 'cpu' })];
    expect(gpu.device).toBe('webgpu');
    const rel = Math.abs(gpu.reference.kl.mean - cpu.reference.kl.mean) / cpu.reference.kl.mean;
    console.log(`webgpu KL ${gpu.reference.kl.mean} vs cpu ${cpu.reference.kl.mean}: relative ${rel.toExponential(2)}`);
    expect(rel).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(gpu.reference.top1_agreement - cpu.reference.top1_agreement)).toBeLessThanOrEqual(1 / cpu.predictions);
    expect(Math.abs(gpu.ppl - cpu.ppl) / cpu.ppl).toBeLessThanOrEqual(1e-6);
    expect(Math.abs(gpu.reference.ppl - cpu.reference.ppl) / cpu.reference.ppl).toBeLessThanOrEqual(1e-6);
    const self = await evaluateKl({ ...opts, reference: opts.model, device: 'webgpu' });
    expect(self.reference.kl.max).toBe(0);
    expect(self.reference.top1_agreement).toBe(1);
  });

  for (const c of ['v1-asym', 'v2-asym']) {
    it(`4-bit GPTQ checkpoint ${c} on MatMulNBits: logits within 1e-3 of transformers`, async () => {
      const dir = path.join(GPTQ_INTEROP, c);
      const { ids, logits: want } = readReference(dir);
      const engine = await createEngine(dir, { device: 'webgpu' });
      try {
        expect(engine.weights.nbitsBlockSize('model.layers.0.block_sparse_moe.experts.0.w1.weight')).toBe(64);
        const out = await engine.forward.run([ids], { head: 'logits' });
        const err = maxAbsDiff(out.logits!, want);
        console.log(`webgpu gptq-interop ${c} max|Δlogit| = ${err.toExponential(2)}`);
        expect(err).toBeLessThan(1e-3);
      } finally {
        await engine.close();
      }
    });
  }

  it('MatMulNBits in the 4-bit form the engine builds has a WebGPU kernel (no CPU fallback) and matches the CPU', async () => {
    const [K, N, blockSize, T] = [256, 96, 64, 5];
    const g = new GraphBuilder('nbits');
    const x = g.input('x', OnnxType.FLOAT, ['T', K]);
    g.output('y', projection(g, x, 'p', N, K, () => ({ kind: 'nbits', blockSize })), OnnxType.FLOAT, ['T', N]);
    const model = g.build();
    const noFallback = { ...sessionOptions('webgpu'), extra: { session: { disable_cpu_ep_fallback: '1' } } };
    const [gpu, cpu] = await Promise.all([ort.InferenceSession.create(model, noFallback), ort.InferenceSession.create(model, sessionOptions('cpu'))]);
    try {
      const rand = seededRandom(7);
      const kb = K / blockSize;
      const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
      const feeds = {
        x: new ort.Tensor('float32', randn(T * K, 8), [T, K]),
        'w.p.B': new ort.Tensor('uint8', bytes(N * kb * (blockSize / 2)), [N, kb, blockSize / 2]),
        'w.p.scales': new ort.Tensor('float32', Float32Array.from({ length: N * kb }, () => 0.01 + 0.01 * rand()), [N, kb]),
        'w.p.zp': new ort.Tensor('uint8', bytes(N * Math.ceil(kb / 2)), [N, Math.ceil(kb / 2)]),
      };
      const [a, b] = [(await gpu.run(feeds)).y!.data as Float32Array, (await cpu.run(feeds)).y!.data as Float32Array];
      const err = maxAbsDiff(a, b);
      console.log(`webgpu MatMulNBits vs cpu max|Δ| = ${err.toExponential(2)}`);
      expect(err).toBeLessThan(1e-4);
    } finally {
      await Promise.all([gpu.release(), cpu.release()]);
    }
  });

  it('concatTree with empty inputs (experts without tokens) gives the CPU result', async () => {
    // A flat Concat of these 20 inputs throws on WebGPU in onnxruntime 1.30 (several passes, empty inputs).
    const n = 20;
    const g = new GraphBuilder('concat');
    const xs = Array.from({ length: n }, (_, j) => g.input(`x${j}`, OnnxType.FLOAT, [`n${j}`, 3]));
    g.output('y', concatTree(g, xs, 0), OnnxType.FLOAT, ['R', 3]);
    const model = g.build();
    const [gpu, cpu] = await Promise.all([ort.InferenceSession.create(model, sessionOptions('webgpu')), ort.InferenceSession.create(model, sessionOptions('cpu'))]);
    try {
      for (const empty of [(j: number) => j === n - 1, (j: number) => j >= 14, (j: number) => j % 2 === 1, () => true]) {
        const feeds: Record<string, ort.Tensor> = {};
        for (let j = 0; j < n; j++) {
          const rows = empty(j) ? 0 : 2;
          feeds[`x${j}`] = new ort.Tensor('float32', Float32Array.from({ length: rows * 3 }, (_, i) => j * 10 + i), [rows, 3]);
        }
        const [a, b] = [(await gpu.run(feeds)).y!, (await cpu.run(feeds)).y!];
        expect(a.dims).toEqual(b.dims);
        expect(Array.from(a.data as Float32Array)).toEqual(Array.from(b.data as Float32Array));
      }
    } finally {
      await Promise.all([gpu.release(), cpu.release()]);
    }
  });
});
