/**
 * eval --reference: KL divergence, top-1 agreement and both perplexities of a model against a reference, checked
 * against a float64 computation from the two models' full logits.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../src/checkpoint/tokenizer.js';
import { SafetensorsFile, writeSafetensors } from '../../src/checkpoint/safetensors.js';
import { comparePositions } from '../../src/engine/compare.js';
import { createEngine } from '../../src/engine/engine.js';
import { MoeQuantError } from '../../src/errors.js';
import { evaluateKl } from '../../src/eval/kl.js';
import { compareStatistics, meanStderr, percentile } from '../../src/eval/kl-stats.js';
import { evaluatePerplexity } from '../../src/eval/perplexity.js';
import { readTextData, consecutiveWindows } from '../../src/eval/data.js';
import { FIXTURES, WIKI } from '../paths.js';

const MIXTRAL = path.join(FIXTURES, 'tiny-mixtral');
const DEEPSEEK = path.join(FIXTURES, 'tiny-deepseek-v3');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-kl-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// The first 40 kB of WikiText-2 test (~10k tokens): tokenizing the whole file would dominate these tests.
const DATA = path.join(tmp, 'wiki-head.txt');
fs.writeFileSync(DATA, fs.readFileSync(WIKI, 'utf8').slice(0, 40_000));
const opts = { data: DATA, seqLen: 64, maxWindows: 16, device: 'cpu' as const, workers: 1 };

/** A copy of `src` in tmp/name whose tensors are float32, with `edits` applied (tokenizer and config copied). */
function editedCopy(src: string, name: string, edits: Record<string, (x: Float32Array) => Float32Array>, config?: (c: Record<string, unknown>) => void): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(src, f), path.join(dir, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  config?.(cfg);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  const file = SafetensorsFile.open(path.join(src, 'model.safetensors'));
  try {
    const tensors = [...file.tensors.values()].map((t) => {
      const original = file.readFloat32(t.name);
      const data = edits[t.name]?.(original) ?? original;
      // An edit may add rows: the leading dimension follows the length.
      const shape = [(t.shape[0]! * data.length) / original.length, ...t.shape.slice(1)];
      return { name: t.name, dtype: 'F32' as const, shape, data: () => new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
    });
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  } finally {
    file.close();
  }
  return dir;
}

const scaled = (f: number) => (x: Float32Array) => x.map((v) => v * f);

/** Per prediction, in float64 from two [T × V] float32 logits: KL(p ‖ q), both NLLs, and whether the first argmaxes agree. */
function float64Reference(a: Float32Array, b: Float32Array, V: number, windows: Int32Array[]) {
  const S = windows[0]!.length;
  const kl: number[] = [];
  const nllRef: number[] = [];
  const nll: number[] = [];
  const same: number[] = [];
  const stats = (x: Float32Array) => {
    let max = -Infinity;
    let arg = 0;
    for (let v = 0; v < V; v++) if (x[v]! > max) [max, arg] = [x[v]!, v];
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(x[v]! - max);
    return { lse: max + Math.log(s), arg };
  };
  windows.forEach((w, n) => {
    for (let s = 0; s + 1 < S; s++) {
      const t = n * S + s;
      const [x, y] = [a.subarray(t * V, (t + 1) * V), b.subarray(t * V, (t + 1) * V)];
      const [sa, sb] = [stats(x), stats(y)];
      let k = 0;
      for (let v = 0; v < V; v++) {
        const [lp, lq] = [x[v]! - sa.lse, y[v]! - sb.lse];
        k += Math.exp(lp) * (lp - lq);
      }
      kl.push(k);
      nllRef.push(sa.lse - x[w[s + 1]!]!);
      nll.push(sb.lse - y[w[s + 1]!]!);
      same.push(sa.arg === sb.arg ? 1 : 0);
    }
  });
  return { kl: Float64Array.from(kl), nllRef: Float64Array.from(nllRef), nll: Float64Array.from(nll), sameTop: Uint8Array.from(same) };
}

function windowsOf(model: string) {
  return consecutiveWindows(loadTokenizer(model).encode(readTextData(DATA)), opts.seqLen, opts.maxWindows);
}

describe('eval --reference (evaluateKl)', () => {
  it('a model against itself: KL exactly 0, top-1 agreement 1, the perplexity of eval', async () => {
    const r = await evaluateKl({ ...opts, model: MIXTRAL, reference: MIXTRAL });
    const plain = await evaluatePerplexity({ ...opts, model: MIXTRAL });
    expect(r.predictions).toBe(16 * 63);
    expect(r.reference.kl.mean).toBe(0);
    expect(r.reference.kl.max).toBe(0);
    expect(r.reference.kl.min).toBe(0);
    expect(r.reference.top1_agreement).toBe(1);
    expect(r.reference.mean_abs_delta_nll).toBe(0);
    expect(r.reference.ppl_ratio).toBe(1);
    expect(r.reference.delta_p.rms).toBe(0);
    expect(r.ppl).toBe(r.reference.ppl);
    // The NLL is computed differently from eval's head (max − logit − log max p vs log-softmax): float32 rounding.
    expect(Math.abs(r.ppl - plain.ppl) / plain.ppl).toBeLessThan(1e-6);
  });

  it('against a perturbed copy: every prediction\'s KL, NLLs and top-1 match a float64 computation from the full logits', async () => {
    // A MoE layer's norm ×1.05 changes the routing downstream; lm_head ×1.1 sharpens every distribution.
    const perturbed = editedCopy(MIXTRAL, 'perturbed', { 'model.layers.1.post_attention_layernorm.weight': scaled(1.05), 'lm_head.weight': scaled(1.1) });
    const windows = windowsOf(MIXTRAL);
    const [ref, model] = [await createEngine(MIXTRAL, { device: 'cpu' }), await createEngine(perturbed, { device: 'cpu' })];
    try {
      const got = await comparePositions(ref, model, windows);
      const V = ref.model.spec.vocabSize;
      const a = (await ref.forward.run(windows, { head: 'logits' })).logits!;
      const b = (await model.forward.run(windows, { head: 'logits' })).logits!;
      const want = float64Reference(a, b, V, windows);
      const S = opts.seqLen;
      let maxErr = 0;
      let j = 0;
      let topDiff = 0;
      for (let n = 0; n < windows.length; n++) {
        for (let s = 0; s < S; s++) {
          const i = n * S + s;
          if (s === S - 1) {
            expect(got.kl[i]).toBeNaN();
            continue;
          }
          maxErr = Math.max(maxErr, Math.abs(got.kl[i]! - want.kl[j]!) / (1e-6 + want.kl[j]!));
          expect(Math.abs(got.nll[i]! - want.nll[j]!)).toBeLessThan(1e-5);
          expect(Math.abs(got.nllRef[i]! - want.nllRef[j]!)).toBeLessThan(1e-5);
          topDiff += Math.abs(got.sameTop[i]! - want.sameTop[j]!);
          j++;
        }
      }
      // Relative to max(KL, 1e-6): float32 logits and sums, arranged to round relative to the difference.
      expect(maxErr).toBeLessThan(1e-3);
      expect(topDiff).toBe(0);

      const r = await evaluateKl({ ...opts, model: perturbed, reference: MIXTRAL });
      const stats = compareStatistics(want.kl, want.nllRef, want.nll, want.sameTop);
      expect(r.reference.kl.mean).toBeGreaterThan(1e-3);
      expect(Math.abs(r.reference.kl.mean - stats.kl.mean) / stats.kl.mean).toBeLessThan(1e-5);
      expect(Math.abs(r.reference.kl.p99 - stats.kl.p99) / stats.kl.p99).toBeLessThan(1e-4);
      expect(Math.abs(r.reference.kl.median - stats.kl.median) / stats.kl.median).toBeLessThan(1e-4);
      expect(r.reference.top1_agreement).toBe(stats.top1_agreement);
      expect(r.reference.top1_agreement).toBeLessThan(1);
      expect(Math.abs(r.reference.mean_abs_delta_nll - stats.mean_abs_delta_nll)).toBeLessThan(1e-6);
      expect(Math.abs(r.ppl - Math.exp(meanStderr(want.nll).mean)) / r.ppl).toBeLessThan(1e-6);
      expect(Math.abs(r.reference.ppl - Math.exp(meanStderr(want.nllRef).mean)) / r.reference.ppl).toBeLessThan(1e-6);
    } finally {
      await ref.close();
      await model.close();
    }
  });

  it('a tiny KL (a norm ×1.0001) is not lost in rounding', async () => {
    const nudged = editedCopy(MIXTRAL, 'nudged', { 'model.norm.weight': scaled(1.0001) });
    const windows = windowsOf(MIXTRAL).slice(0, 4);
    const [ref, model] = [await createEngine(MIXTRAL, { device: 'cpu' }), await createEngine(nudged, { device: 'cpu' })];
    try {
      const got = await comparePositions(ref, model, windows);
      const a = (await ref.forward.run(windows, { head: 'logits' })).logits!;
      const b = (await model.forward.run(windows, { head: 'logits' })).logits!;
      const want = float64Reference(a, b, ref.model.spec.vocabSize, windows);
      const gotKl = Float64Array.from(got.kl.filter((v) => !Number.isNaN(v)));
      const [m, w] = [meanStderr(gotKl).mean, meanStderr(want.kl).mean];
      // Logits ×1.0001: KL ≈ ½·1e-8·Var(logits) ~ 1e-8 nats, a hundred times below one float32 ulp of a log-probability.
      expect(w).toBeGreaterThan(1e-10);
      expect(w).toBeLessThan(1e-6);
      expect(Math.abs(m - w) / w).toBeLessThan(0.01);
    } finally {
      await ref.close();
      await model.close();
    }
  });

  it('in bounded groups of windows gives what one group gives, with progress counted to the end', async () => {
    const windows = windowsOf(MIXTRAL);
    const [ref, model] = [await createEngine(DEEPSEEK, { device: 'cpu' }), await createEngine(MIXTRAL, { device: 'cpu' })];
    try {
      const whole = await comparePositions(ref, model, windows, { batchTokens: 128 });
      const steps: [number, number][] = [];
      // Room for the hidden states of two windows (one batch of 128 tokens) of both models: 8 groups.
      const grouped = await comparePositions(ref, model, windows, { batchTokens: 128, hiddenBytes: 128 * (128 + 128) * 4, onProgress: (d, t) => steps.push([d, t]) });
      expect(grouped.kl).toEqual(whole.kl);
      expect(grouped.nll).toEqual(whole.nll);
      expect(grouped.sameTop).toEqual(whole.sameTop);
      const total = steps[0]![1];
      // Per group of 2 windows: 4 + 4 layer-batches and one head batch.
      expect(total).toBe(8 * 9);
      expect(steps.map(([d]) => d)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    } finally {
      await ref.close();
      await model.close();
    }
  });

  it('different models with the same tokenizer, in parallel workers as on one engine', async () => {
    const one = await evaluateKl({ ...opts, model: MIXTRAL, reference: DEEPSEEK });
    const two = await evaluateKl({ ...opts, model: MIXTRAL, reference: DEEPSEEK, workers: 2 });
    expect(two.workers).toBe(2);
    expect(one.reference.kl.mean).toBeGreaterThan(0.05);
    expect(Math.abs(two.reference.kl.mean - one.reference.kl.mean)).toBeLessThan(1e-6);
    expect(two.reference.top1_agreement).toBe(one.reference.top1_agreement);
    expect(Math.abs(two.ppl - one.ppl) / one.ppl).toBeLessThan(1e-6);
    // The perplexities are each model's own.
    const ds = await evaluatePerplexity({ ...opts, model: DEEPSEEK });
    expect(Math.abs(one.reference.ppl - ds.ppl) / ds.ppl).toBeLessThan(1e-6);
    expect(one.reference.model).toBe(path.resolve(DEEPSEEK));
  });

  it('refuses a reference that tokenizes the text differently', async () => {
    const dir = path.join(tmp, 'other-tokenizer');
    fs.mkdirSync(dir);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer_config.json']) fs.copyFileSync(path.join(MIXTRAL, f), path.join(dir, f));
    const tok = JSON.parse(fs.readFileSync(path.join(MIXTRAL, 'tokenizer.json'), 'utf8'));
    tok.model.merges = tok.model.merges.slice(100);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tok));
    const err = await evaluateKl({ ...opts, model: MIXTRAL, reference: dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MoeQuantError);
    expect((err as MoeQuantError).code).toBe('BAD_OPTION');
    expect((err as MoeQuantError).message).toMatch(/--reference .*other-tokenizer tokenizes .*wiki-head\.txt differently from --model .*tiny-mixtral \(token \d+ is id \d+ for --model, \d+ for --reference\)/);
    // A byte-different tokenizer.json that tokenizes the same is fine.
    const same = path.join(tmp, 'same-tokenizer');
    fs.mkdirSync(same);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer_config.json']) fs.copyFileSync(path.join(MIXTRAL, f), path.join(same, f));
    fs.writeFileSync(path.join(same, 'tokenizer.json'), JSON.stringify(JSON.parse(fs.readFileSync(path.join(MIXTRAL, 'tokenizer.json'), 'utf8')), null, 1));
    const ok = await evaluateKl({ ...opts, maxWindows: 1, model: MIXTRAL, reference: same });
    expect(ok.reference.kl.mean).toBe(0);
  });

  it('NaN/Inf in either model\'s logits: a NUMERIC error naming which model', async () => {
    // Finite weights (NaN weights are refused on read) whose logits overflow float32.
    const broken = editedCopy(MIXTRAL, 'overflow', { 'model.norm.weight': scaled(1e38) });
    for (const [model, reference, who] of [
      [MIXTRAL, broken, /NaN\/Inf in the reference model's logits \(window 0, position 0\)/],
      [broken, MIXTRAL, /NaN\/Inf in the model's logits \(window 0, position 0\)/],
    ] as const) {
      const err = await evaluateKl({ ...opts, maxWindows: 1, model, reference }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MoeQuantError);
      expect((err as MoeQuantError).code).toBe('NUMERIC');
      expect((err as MoeQuantError).message).toMatch(who);
    }
  });

  it('refuses a reference with another vocabulary size', async () => {
    // Same tokenizer, lm_head and embeddings padded by 64 rows (as checkpoints pad vocabularies to a multiple).
    const pad = (x: Float32Array) => {
      const y = new Float32Array(x.length + 64 * 128);
      y.set(x);
      return y;
    };
    const dir = editedCopy(MIXTRAL, 'padded-vocab', { 'lm_head.weight': pad, 'model.embed_tokens.weight': pad }, (c) => (c['vocab_size'] = 4096 + 64));
    const err = await evaluateKl({ ...opts, model: MIXTRAL, reference: dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MoeQuantError);
    expect((err as MoeQuantError).message).toMatch(/--reference .*padded-vocab has a vocabulary of 4160 tokens and --model .*tiny-mixtral one of 4096/);
  });
});

describe('comparison statistics (llama.cpp definitions)', () => {
  it('percentiles interpolate at fraction·(n − 1); the standard error is sqrt(var / (n − 1))', () => {
    const x = Float64Array.from([4, 1, 3, 2]).sort();
    expect(percentile(x, 0.5)).toBe(2.5);
    expect(percentile(x, 0.99)).toBeCloseTo(3.97, 12);
    expect(percentile(x, 0)).toBe(1);
    expect(percentile(x, 1)).toBe(4);
    const { mean, stderr } = meanStderr([1, 2, 3, 4]);
    expect(mean).toBe(2.5);
    expect(stderr).toBeCloseTo(Math.sqrt(1.25 / 3), 12);
    expect(meanStderr([7]).stderr).toBeNull();
  });

  it('top-1 agreement, Δp, |ΔNLL| and the perplexity ratio from hand-made predictions', () => {
    const nllRef = Float64Array.from([1, 2, 3, 4]);
    const nll = Float64Array.from([1.5, 2, 2.5, 5]);
    const c = compareStatistics(Float64Array.from([0.1, 0, 0.3, 0.2]), nllRef, nll, Uint8Array.from([1, 1, 0, 1]));
    expect(c.top1_agreement).toBe(0.75);
    expect(c.top1_agreement_stderr).toBeCloseTo(Math.sqrt((0.75 * 0.25) / 3), 12);
    expect(c.kl.mean).toBeCloseTo(0.15, 12);
    expect(c.kl.median).toBeCloseTo(0.15, 12);
    expect(c.kl.max).toBe(0.3);
    expect(c.mean_abs_delta_nll).toBeCloseTo(0.5, 12);
    expect(c.ln_ppl_ratio).toBeCloseTo(0.25, 12);
    expect(c.ppl_ratio).toBeCloseTo(Math.exp(0.25), 12);
    const dp = [Math.exp(-1.5) - Math.exp(-1), 0, Math.exp(-2.5) - Math.exp(-3), Math.exp(-5) - Math.exp(-4)];
    expect(c.delta_p.mean).toBeCloseTo(dp.reduce((a, b) => a + b) / 4, 12);
    expect(c.delta_p.rms).toBeCloseTo(Math.sqrt(dp.reduce((a, b) => a + b * b, 0) / 4), 12);
    expect(c.delta_p.min).toBeCloseTo(Math.min(...dp), 12);
    const sorted = [...dp].sort((x, y) => x - y);
    expect(c.delta_p.p75).toBeCloseTo(0.75 * sorted[2]! + 0.25 * sorted[3]!, 12);
    expect(c.delta_p.p25).toBeCloseTo(0.25 * sorted[0]! + 0.75 * sorted[1]!, 12);
    expect(c.nll_correlation).toBeGreaterThan(0.8);
  });
});
