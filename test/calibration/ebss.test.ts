/**
 * EBSS and the beam batch under it: the Decoder's per-row expert counts and top-k against a full forward, the
 * sampler against a slow reference of the published algorithm (full recomputation, explicit scores over the whole
 * vocabulary), determinism, resuming an interrupted generation, and --no-repeat-ngram.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bannedByNgram, distinctNgramRatio, sampleEbss } from '../../src/calibration/samplers/ebss.js';
import { loadTokenizer } from '../../src/checkpoint/tokenizer.js';
import { Decoder } from '../../src/engine/decoder.js';
import { createEngine, type Engine } from '../../src/engine/engine.js';
import { sigma } from '../../src/routing/balance.js';
import { FIXTURES } from '../paths.js';

const QWEN = path.join(FIXTURES, 'tiny-qwen3-moe');
const DEEPSEEK = path.join(FIXTURES, 'tiny-deepseek-v3');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-ebss-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Natural routing counts per MoE layer of one sequence, from a full forward. */
async function fullCounts(engine: Engine, seq: Int32Array): Promise<Map<number, Int32Array>> {
  const counts = new Map<number, Int32Array>();
  await engine.forward.run([seq], {
    head: 'none',
    hooks: {
      onRouting: (ev) => {
        const c = counts.get(ev.layerIndex) ?? new Int32Array(ev.routing.numExperts);
        for (const e of ev.routing.experts) c[e]!++;
        counts.set(ev.layerIndex, c);
      },
    },
  });
  return counts;
}

describe('Decoder: the beam batch', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await createEngine(DEEPSEEK, { device: 'cpu' });
  });
  afterAll(() => engine.close());

  it('keeps each row’s expert counts equal to a full forward’s, through growth, reorder and a batch-size change', async () => {
    const V = engine.model.spec.vocabSize;
    const seqs = [0, 1, 2].map((r) => Int32Array.from({ length: 150 }, (_, i) => (i * 31 + r * 977 + 5) % V));
    const dec = new Decoder(engine.forward, 3, { maxLength: 150 });
    await dec.step(seqs.map((s) => s.subarray(0, 20)));
    // Rows follow the sequences; after a reorder the row order changes, so track which sequence each row holds.
    let holds = [0, 1, 2];
    for (let p = 20; p < 100; p++) {
      if (p === 60) {
        dec.reorder([2, 0, 0]);
        holds = [holds[2]!, holds[0]!, holds[0]!];
      }
      await dec.step(holds.map((h) => seqs[h]!.subarray(p, p + 1)));
    }
    dec.reorder([1, 2]); // batch of 2 (drops a row); capacity stays
    holds = [holds[1]!, holds[2]!];
    for (let p = 100; p < 130; p++) await dec.step(holds.map((h) => seqs[h]!.subarray(p, p + 1)));
    // A row that switched sequence at 60 holds the prefix of its new sequence only from the reorder on; compare rows
    // that always held one sequence: rows holding sequence 0 (it has been sequence 0 from the start).
    const moe = engine.model.spec.layers.filter((l) => l.ffn.kind === 'moe').map((l) => l.index);
    const want = await fullCounts(engine, seqs[0]!.subarray(0, 130));
    for (let row = 0; row < 2; row++) {
      expect(holds[row]).toBe(0);
      for (const layer of moe) expect(Array.from(dec.expertCounts(row, layer))).toEqual(Array.from(want.get(layer)!));
      expect(dec.sigma(row)).toBeCloseTo(moe.reduce((s, l) => s + sigma(want.get(l)!), 0) / moe.length, 12);
    }
  });

  it('stepTop gives the top tokens of step()’s distribution, with their log-probabilities', async () => {
    const V = engine.model.spec.vocabSize;
    const seq = Int32Array.from({ length: 30 }, (_, i) => (i * 13 + 7) % V);
    const a = new Decoder(engine.forward, 1, { maxLength: 32 });
    const b = new Decoder(engine.forward, 1, { maxLength: 32 });
    const logits = await a.step([seq]);
    const top = await b.stepTop([seq], 5);
    let max = -Infinity;
    for (const x of logits) max = Math.max(max, x);
    let z = 0;
    for (const x of logits) z += Math.exp(x - max);
    const order = Array.from(logits.keys()).sort((i, j) => logits[j]! - logits[i]! || i - j);
    expect(Array.from(top.ids)).toEqual(order.slice(0, 5));
    for (let t = 0; t < 5; t++) expect(top.logp[t]).toBeCloseTo(logits[top.ids[t]!]! - max - Math.log(z), 4);
  });
});

/** The published algorithm, slowly: every beam recomputed from scratch each step, every token scored. */
async function referenceEbss(engine: Engine, start: number, seqLen: number, w: number, tau: number, special: Set<number>): Promise<number[]> {
  const V = engine.model.spec.vocabSize;
  let beams = [{ seq: [start], R: 0 }];
  let best: number[] = [start];
  for (let l = 1; l < seqLen; l++) {
    const cands: Array<{ score: number; b: number; v: number; seq: number[]; R: number }> = [];
    for (let b = 0; b < beams.length; b++) {
      const { seq, R } = beams[b]!;
      const ids = Int32Array.from(seq);
      const logits = (await engine.forward.run([ids], { head: 'logits' })).logits!.subarray((l - 1) * V, l * V);
      const counts = await fullCounts(engine, ids);
      const sig = [...counts.values()].reduce((s, c) => s + sigma(c), 0) / counts.size;
      let max = -Infinity;
      for (const x of logits) max = Math.max(max, x);
      let z = 0;
      for (const x of logits) z += Math.exp(x - max);
      for (let v = 0; v < V; v++) {
        if (special.has(v)) continue;
        const lp = logits[v]! - max - Math.log(z);
        cands.push({ score: -(R + lp) / (l + 1) + sig / tau, b, v, seq: [...seq, v], R: R + lp });
      }
    }
    cands.sort((x, y) => x.score - y.score || x.b - y.b || x.v - y.v);
    beams = cands.slice(0, w).map((c) => ({ seq: c.seq, R: c.R }));
    best = beams[0]!.seq;
  }
  return best;
}

describe('EBSS sampler', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await createEngine(QWEN, { device: 'cpu' });
  });
  afterAll(() => engine.close());
  const ctx = (dir: string, samples: number, seqLen: number, seed = 0) => ({ engine, model: QWEN, samples, seqLen, seed, dir });

  it('chooses the same tokens as a slow reference of the published beam search', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'ref-'));
    const set = await sampleEbss(ctx(dir, 3, 10), { width: 3, tau: 0.05, batchSamples: 3 });
    const special = new Set(loadTokenizer(QWEN).specialIds);
    for (let i = 0; i < 3; i++) {
      const want = await referenceEbss(engine, set.windows[i]![0]!, 10, 3, 0.05, special);
      expect(Array.from(set.windows[i]!)).toEqual(want);
    }
  });

  it('is deterministic, resumes an interrupted generation identically, and writes calibration.jsonl', async () => {
    const a = fs.mkdtempSync(path.join(tmp, 'a-'));
    const full = await sampleEbss(ctx(a, 5, 24, 3), { batchSamples: 2 });
    const lines = fs.readFileSync(path.join(a, 'calibration.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.ids)).toEqual(full.windows.map((w) => Array.from(w)));
    expect(lines[0].text).toBe(loadTokenizer(QWEN).decode(full.windows[0]!));
    const again = await sampleEbss(ctx(fs.mkdtempSync(path.join(tmp, 'b-')), 5, 24, 3), { batchSamples: 2 });
    expect(again.windows).toEqual(full.windows);
    // Interrupted after the second batch of 2, in the middle of the third: the partial file holds samples 0..3 and
    // half a line; the resumed run generates only sample 4 and gives the same set.
    const c = fs.mkdtempSync(path.join(tmp, 'c-'));
    fs.writeFileSync(path.join(c, 'calibration.jsonl'), `${lines.slice(0, 4).map((l) => JSON.stringify(l)).join('\n')}\n{"text": "trunc`);
    const resumed = await sampleEbss(ctx(c, 5, 24, 3), { batchSamples: 2 });
    expect((resumed.info['run'] as { resumed_samples: number }).resumed_samples).toBe(4);
    expect(resumed.windows).toEqual(full.windows);
    // Other settings (another seed) do not reuse those samples.
    const other = await sampleEbss(ctx(c, 5, 24, 4), { batchSamples: 2 });
    expect((other.info['run'] as { resumed_samples: number }).resumed_samples).toBe(0);
    // A different batch size changes nothing but the batching.
    const batched = await sampleEbss(ctx(fs.mkdtempSync(path.join(tmp, 'd-')), 5, 24, 3), { batchSamples: 5 });
    expect(batched.windows.map((w) => Array.from(w))).toEqual(full.windows.map((w) => Array.from(w)));
  });

  it('--no-repeat-ngram 4: no 4-gram twice within a sample, and more distinct text', async () => {
    const plain = await sampleEbss(ctx(fs.mkdtempSync(path.join(tmp, 'p-')), 4, 64, 1));
    const norep = await sampleEbss(ctx(fs.mkdtempSync(path.join(tmp, 'n-')), 4, 64, 1), { noRepeatNgram: 4 });
    for (const w of norep.windows) expect(distinctNgramRatio([w], 4)).toBe(1);
    expect(norep.info['distinct_4gram']).toBeGreaterThan(plain.info['distinct_4gram'] as number);
    expect(bannedByNgram([1, 2, 3, 9, 1, 2], 6, 3)).toEqual(new Set([3]));
    expect(bannedByNgram([5, 5, 5], 3, 2)).toEqual(new Set([5]));
    expect(bannedByNgram([1, 2, 3], 3, 1)).toEqual(new Set([1, 2, 3]));
    expect(distinctNgramRatio([[1, 2, 3, 4, 1, 2, 3, 4, 1]], 4)).toBeCloseTo(4 / 6, 12);
  });

  it('start tokens: seeded random non-special ids, or 0, 1, 2, … with --ebss-start ids', async () => {
    const special = new Set(loadTokenizer(QWEN).specialIds);
    const r = await sampleEbss(ctx(fs.mkdtempSync(path.join(tmp, 's-')), 6, 4, 9), { width: 2 });
    expect(r.windows.every((w) => !special.has(w[0]!))).toBe(true);
    expect(new Set(r.windows.map((w) => w[0])).size).toBeGreaterThan(1);
    const ids = await sampleEbss(ctx(fs.mkdtempSync(path.join(tmp, 'i-')), 6, 4, 9), { width: 2, start: 'ids' });
    expect(ids.windows.map((w) => w[0])).toEqual([0, 1, 2, 3, 4, 5]);
    for (const w of [...r.windows, ...ids.windows]) for (const t of w.subarray(1)) expect(special.has(t)).toBe(false);
  });
});
