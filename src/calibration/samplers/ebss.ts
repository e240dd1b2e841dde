/**
 * EBSS, expert-balanced self-sampling (MoEQuant, ICML 2025, §4.2 and Algorithm 1): the model writes its own
 * calibration text by a beam search that prefers sequences whose experts are used evenly.
 *
 * As published, with its ambiguities resolved as follows:
 *   - Beam search of width w over the whole vocabulary. A kept prefix S of length l with cumulative log-probability
 *     R_S scores each candidate token v as  −(R_S + log p(v|S)) / (l + 1) + σ(S) / τ  and the w LOWEST scores of
 *     all (beam, token) pairs are kept (the paper says "maximize", but its objective, Eq. 10, is a minimisation).
 *   - σ(S) is deferred (paper text, not Algorithm 1): the expert-usage σ of the prefix, shared by all its children —
 *     per MoE layer the sample std (E − 1) of usage shares, averaged over layers (the balance report's σ), of the
 *     routing the model makes for the prefix's tokens (natural routing).
 *   - Only the w best tokens of each beam can be among the w best pairs (σ and R_S are the beam's constants), so
 *     each beam's distribution is reduced to its top tokens inside onnxruntime (log-softmax + TopK).
 *   - Start token per sample: seeded random non-special tokens (`random`, Algorithm 1's Random(V)), or ids 0…n−1
 *     (`ids`, what the released EBSS data shows). Until the first step all beams of a sample are one.
 *   - Length: the released data stops at EOS (inferred; the paper is silent). Calibration here needs full windows,
 *     so special tokens (EOS included) are never chosen and every sample runs to --seq-len.
 *   - The sample is the best beam of the last step. Ties break on beam index, then token id (deterministic).
 *   - --no-repeat-ngram n (off, as published) forbids a token that would repeat an n-gram already in its beam.
 * Beams of several samples advance together in one Decoder batch, which owns the KV caches and each row's expert
 * counts and reorders both after every step. Samples are appended to calibration.jsonl batch by batch, so an
 * interrupted generation resumes from the last finished batch with identical results.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadTokenizer } from '../../checkpoint/tokenizer.js';
import { Decoder } from '../../engine/decoder.js';
import { modelFingerprint } from '../../engine/model.js';
import { fail } from '../../errors.js';
import { SAMPLES_FILE } from '../calibration-dir.js';
import { seededRandom } from '../samples.js';
import type { SampledSet, SamplerContext } from './types.js';

export type EbssStart = 'random' | 'ids';

export interface EbssOptions {
  /** Beam width w (paper: 4). */
  width?: number;
  /** Balance temperature τ (paper: 1.2); smaller weighs balance more. */
  tau?: number;
  start?: EbssStart;
  /** Forbid repeating an n-gram within a beam (0 = off, as published). */
  noRepeatNgram?: number;
  /** Samples whose beams are decoded together in one batch. */
  batchSamples?: number;
}

export const EBSS_DEFAULTS = { width: 4, tau: 1.2, start: 'random' as EbssStart, noRepeatNgram: 0, batchSamples: 32 };

export function ebssSettings(o: EbssOptions = {}) {
  const s = { ...EBSS_DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) } as typeof EBSS_DEFAULTS;
  if (!Number.isInteger(s.width) || s.width < 1) throw fail('BAD_OPTION', `--ebss-width must be a positive integer (got ${s.width})`);
  if (!(Number.isFinite(s.tau) && s.tau > 0)) throw fail('BAD_OPTION', `--ebss-tau must be a positive number (got ${s.tau})`);
  if (s.start !== 'random' && s.start !== 'ids') throw fail('BAD_OPTION', `--ebss-start must be random or ids (got ${String(s.start)})`);
  if (!Number.isInteger(s.noRepeatNgram) || s.noRepeatNgram < 0) throw fail('BAD_OPTION', `--no-repeat-ngram must be a non-negative integer (got ${s.noRepeatNgram})`);
  if (!Number.isInteger(s.batchSamples) || s.batchSamples < 1) throw fail('BAD_OPTION', `--ebss-batch must be a positive integer (got ${s.batchSamples})`);
  return s;
}

/** Distinct n-grams / all n-grams over the samples (n-grams within each sample): 1 = no repeats. */
export function distinctNgramRatio(samples: ArrayLike<number>[], n = 4): number {
  const seen = new Set<string>();
  let total = 0;
  for (const s of samples)
    for (let i = 0; i + n <= s.length; i++) {
      let key = '';
      for (let j = 0; j < n; j++) key += `${s[i + j]},`;
      seen.add(key);
      total++;
    }
  return total ? seen.size / total : 1;
}

/** Tokens v such that (the last n−1 tokens of seq[0..len), v) already occurs in seq[0..len). */
export function bannedByNgram(seq: ArrayLike<number>, len: number, n: number): Set<number> {
  const banned = new Set<number>();
  if (n < 1 || len < n - 1) return banned;
  if (n === 1) {
    for (let i = 0; i < len; i++) banned.add(seq[i]!);
    return banned;
  }
  const tail = len - (n - 1);
  for (let i = 0; i + n - 1 < len; i++) {
    let match = true;
    for (let j = 0; j < n - 1 && match; j++) match = seq[i + j] === seq[tail + j];
    if (match) banned.add(seq[i + n - 1]!);
  }
  return banned;
}

interface SampleLine {
  text: string;
  ids: number[];
  sample: number;
  ebss: string;
}

/** Samples a previous, interrupted run with the same settings left in calibration.jsonl (0, 1, 2, … in order). */
function resumeSamples(file: string, key: string): number[][] {
  if (!fs.existsSync(file)) return [];
  const out: number[][] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let obj: Partial<SampleLine>;
    try {
      obj = JSON.parse(line) as Partial<SampleLine>;
    } catch {
      break;
    }
    if (obj.ebss !== key || obj.sample !== out.length || !Array.isArray(obj.ids)) break;
    out.push(obj.ids);
  }
  return out;
}

export async function sampleEbss(ctx: SamplerContext, opts: EbssOptions = {}): Promise<SampledSet> {
  const o = ebssSettings(opts);
  const { engine, samples, seqLen } = ctx;
  const { spec } = engine.model;
  if (spec.maxPositions !== null && seqLen > spec.maxPositions)
    throw fail('BAD_OPTION', `--seq-len ${seqLen} is beyond the model's max_position_embeddings (${spec.maxPositions})`);
  const tok = loadTokenizer(ctx.model);
  const special = new Set(tok.specialIds);
  const V = spec.vocabSize;
  const allowed: number[] = [];
  for (let v = 0; v < V; v++) if (!special.has(v)) allowed.push(v);
  if (allowed.length < o.width) throw fail('BAD_OPTION', `--ebss-width ${o.width} is more than the ${allowed.length} non-special tokens`);
  if (o.start === 'ids' && samples > V) throw fail('BAD_OPTION', `--ebss-start ids needs --samples ≤ the vocabulary (${V})`);
  const rand = seededRandom(ctx.seed);
  const starts = Array.from({ length: samples }, (_, i) => (o.start === 'ids' ? i : allowed[Math.floor(rand() * allowed.length)]!));

  // A previous run of the same generation (same model, settings and seed) may have left finished batches.
  const settings = { model: modelFingerprint(engine.model), seqLen, seed: ctx.seed, ...o };
  const key = createHash('sha256').update(JSON.stringify(settings)).digest('hex').slice(0, 16);
  const file = path.join(ctx.dir, SAMPLES_FILE);
  const done = resumeSamples(file, key).slice(0, samples);
  const resumed = done.length - (done.length % o.batchSamples === 0 || done.length === samples ? 0 : done.length % o.batchSamples);
  done.length = resumed;
  fs.writeFileSync(file, done.map((ids, i) => `${JSON.stringify({ text: tok.decode(ids), ids, sample: i, ebss: key })}\n`).join(''));
  if (resumed > 0) ctx.onNote?.(`ebss: resuming after ${resumed} samples generated by an interrupted run`);

  const w = o.width;
  const t0 = performance.now();
  let generated = 0;
  const stepTimes = new Map<number, number[]>();
  for (let s0 = resumed; s0 < samples; s0 += o.batchSamples) {
    const nb = Math.min(o.batchSamples, samples - s0);
    const rows = nb * w;
    const dec = new Decoder(engine.forward, rows, { maxLength: seqLen });
    let seqs = new Int32Array(rows * seqLen);
    let R = new Float64Array(rows);
    for (let j = 0; j < nb; j++)
      for (let b = 0; b < w; b++) {
        seqs[(j * w + b) * seqLen] = starts[s0 + j]!;
        R[j * w + b] = b === 0 ? 0 : -Infinity; // one beam until the first step
      }
    let tokens = Array.from({ length: rows }, (_, r) => seqs.subarray(r * seqLen, r * seqLen + 1));
    let best = new Int32Array(nb);
    // rank[row]: the beam's place in its sample's last selection (0 = best); ties between candidates break on it.
    let rank = Int32Array.from({ length: rows }, (_, r) => r % w);
    for (let l = 1; l < seqLen; l++) {
      const ts = performance.now();
      const banned = o.noRepeatNgram > 0 ? Array.from({ length: rows }, (_, r) => bannedByNgram(seqs.subarray(r * seqLen), l, o.noRepeatNgram)) : null;
      const k = w + special.size + (banned ? Math.max(...banned.map((x) => x.size)) : 0);
      const top = await dec.stepTop(tokens, k);
      const parents = new Int32Array(rows);
      const chosen = new Int32Array(rows);
      const nextR = new Float64Array(rows);
      const nextRank = new Int32Array(rows);
      for (let j = 0; j < nb; j++) {
        const cands: Array<{ score: number; rank: number; row: number; v: number; r: number }> = [];
        for (let b = 0; b < w; b++) {
          const row = j * w + b;
          if (R[row] === -Infinity) continue;
          const penalty = dec.sigma(row) / o.tau;
          for (let t = 0, taken = 0; t < top.k && taken < w; t++) {
            const v = top.ids[row * top.k + t]!;
            if (special.has(v) || banned?.[row]!.has(v)) continue;
            const r = R[row]! + top.logp[row * top.k + t]!;
            cands.push({ score: -r / (l + 1) + penalty, rank: rank[row]!, row, v, r });
            taken++;
          }
        }
        if (cands.length === 0) throw fail('NUMERIC', `ebss: no allowed token for sample ${s0 + j} at position ${l} (vocabulary exhausted by --no-repeat-ngram?)`);
        cands.sort((x, y) => x.score - y.score || x.rank - y.rank || x.v - y.v);
        // The i-th best continuation goes into its parent's own row when that row is still free, so the caches
        // move only for parents with several children (beam order is kept in rank, not in rows).
        const kept = cands.slice(0, w);
        while (kept.length < w) kept.push({ ...kept[kept.length - 1]!, r: -Infinity });
        const slot = new Int32Array(w).fill(-1);
        const used = new Uint8Array(w);
        kept.forEach((c, i) => {
          const own = c.row - j * w;
          if (!used[own]) [slot[i], used[own]] = [own, 1];
        });
        kept.forEach((c, i) => {
          if (slot[i]! >= 0) return;
          const free = used.indexOf(0);
          [slot[i], used[free]] = [free, 1];
        });
        kept.forEach((c, i) => {
          const row = j * w + slot[i]!;
          parents[row] = c.row;
          chosen[row] = c.v;
          nextR[row] = c.r;
          nextRank[row] = i;
        });
      }
      dec.reorder(parents);
      const next = new Int32Array(rows * seqLen);
      for (let r = 0; r < rows; r++) {
        next.set(seqs.subarray(parents[r]! * seqLen, parents[r]! * seqLen + l), r * seqLen);
        next[r * seqLen + l] = chosen[r]!;
      }
      seqs = next;
      R = nextR;
      rank = nextRank;
      tokens = Array.from({ length: rows }, (_, r) => seqs.subarray(r * seqLen + l, r * seqLen + l + 1));
      best = Int32Array.from({ length: nb }, (_, j) => j * w + rank.subarray(j * w, (j + 1) * w).indexOf(0));
      generated += nb;
      const list = stepTimes.get(l) ?? [];
      list.push(performance.now() - ts);
      stepTimes.set(l, list);
      const secs = (performance.now() - t0) / 1000;
      ctx.onProgress?.(s0 - resumed + (nb * l) / (seqLen - 1), samples - resumed, 'ebss', `${s0 + Math.floor((nb * l) / (seqLen - 1))}/${samples} samples, ${(generated / secs).toFixed(0)} tokens/s`);
    }
    const lines = Array.from(best, (row, j) => {
      const ids = Array.from(seqs.subarray(row * seqLen, (row + 1) * seqLen));
      return `${JSON.stringify({ text: tok.decode(ids), ids, sample: s0 + j, ebss: key })}\n`;
    });
    fs.appendFileSync(file, lines.join(''));
    for (const row of best) done.push(Array.from(seqs.subarray(row * seqLen, (row + 1) * seqLen)));
  }
  const seconds = (performance.now() - t0) / 1000;
  const stepMs = (l: number) => {
    const t = stepTimes.get(l);
    return t && t.length ? Math.round((t.reduce((a, b) => a + b, 0) / t.length) * 100) / 100 : null;
  };
  return {
    windows: done.map((ids) => Int32Array.from(ids)),
    info: {
      name: 'ebss',
      width: o.width,
      tau: o.tau,
      start: o.start,
      no_repeat_ngram: o.noRepeatNgram,
      batch_samples: o.batchSamples,
      distinct_4gram: distinctNgramRatio(done, 4),
      // Figures of this run only (not recorded in calibration.json, which stays identical for the same inputs).
      run: {
        resumed_samples: resumed,
        generated_tokens: generated,
        seconds,
        tokens_per_second: seconds > 0 ? generated / seconds : null,
        step_ms: { 16: stepMs(16), 256: stepMs(256), 511: stepMs(511) },
      },
    },
    data: [],
  };
}
