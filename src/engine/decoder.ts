/**
 * Incremental decoding of a batch of B rows (beams) that advance together, for generation and beam search.
 * Unlike ForwardEngine.run (layer-major), each step runs every layer for the new tokens, so it is meant for models
 * whose weights stay resident (or for short generations).
 *
 * The batch owns its state and reorders it as one: per layer a preallocated KV cache [B, kvHeads, C, d] (MLA
 * caches the expanded per-head keys/values) whose capacity C doubles as the sequence grows (up to maxLength), so
 * the graph attends over the cache in place (unused capacity masked; see cachedAttention) and a step only writes
 * the new keys into it — the prefix is never recomputed or copied, and attention costs at most twice the prefix —
 * and per row the expert selections of its tokens so far in every MoE layer (the routing used: natural unless the
 * caller's hooks bias it). `reorder` keeps, duplicates or drops rows of both together, as beam search does.
 */
import * as ort from 'onnxruntime-node';
import { ropeTables } from '../architectures/_rope.js';
import { fail } from '../errors.js';
import { tensor } from '../graph/session.js';
import { sigma } from '../routing/balance.js';
import { attentionWindow, causalMask, type ForwardEngine, type ForwardHooks } from './forward.js';

interface LayerCache {
  key: Float32Array;
  value: Float32Array;
}

export class Decoder {
  /** Number of tokens already in the cache. */
  position = 0;
  readonly maxLength: number;
  /** Positions the caches hold now (grows by doubling up to maxLength). */
  private capacity = 0;
  private caches: LayerCache[] = [];
  private readonly heads: number;
  private readonly dk: number;
  private readonly dv: number;
  /** MoE layer index → offset of its experts in a row's counts. */
  private readonly moeOffset = new Map<number, { offset: number; experts: number }>();
  private readonly countsPerRow: number;
  /** Expert selections per row: [B, Σ_moe-layers E]. */
  private counts: Int32Array;

  constructor(
    private readonly engine: ForwardEngine,
    public batchSize: number,
    opts: { maxLength?: number } = {},
  ) {
    const { spec } = engine;
    const a = spec.attention;
    [this.heads, this.dk, this.dv] = a.kind === 'mha' ? [a.numKvHeads, a.headDim, a.headDim] : [a.numHeads, a.qkNopeHeadDim + a.qkRopeHeadDim, a.vHeadDim];
    this.maxLength = opts.maxLength ?? 2048;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 1) throw fail('BAD_OPTION', `decoder maxLength must be a positive integer (got ${opts.maxLength})`);
    let offset = 0;
    for (const layer of spec.layers)
      if (layer.ffn.kind === 'moe') {
        this.moeOffset.set(layer.index, { offset, experts: layer.ffn.routing.numExperts });
        offset += layer.ffn.routing.numExperts;
      }
    this.countsPerRow = offset;
    this.counts = new Int32Array(batchSize * offset);
    this.resize(batchSize, Math.min(64, this.maxLength), []);
  }

  /** New caches for B rows and capacity C, holding the first `position` positions of rows `rows` of the old ones. */
  private resize(B: number, C: number, rows: ArrayLike<number>): void {
    const old = this.caches;
    const oldC = this.capacity;
    const P = this.position;
    const hk = this.heads;
    this.caches = this.engine.spec.layers.map((_, l) => {
      const c = { key: new Float32Array(B * hk * C * this.dk), value: new Float32Array(B * hk * C * this.dv) };
      if (P > 0)
        for (const [buf, from, d] of [[c.key, old[l]!.key, this.dk], [c.value, old[l]!.value, this.dv]] as const)
          for (let i = 0; i < B; i++)
            for (let h = 0; h < hk; h++) {
              const src = ((rows[i]! * hk + h) * oldC) * d;
              buf.set(from.subarray(src, src + P * d), ((i * hk + h) * C) * d);
            }
      return c;
    });
    this.capacity = C;
    this.batchSize = B;
  }

  /** Run `tokens` (B rows of s tokens each) through every layer; returns each row's last hidden state [B × hidden]. */
  private async advance(tokens: Int32Array[], hooks?: ForwardHooks): Promise<Float32Array> {
    const { spec } = this.engine;
    const B = this.batchSize;
    if (tokens.length !== B) throw fail('BAD_OPTION', `decoder step needs ${B} rows, got ${tokens.length}`);
    const s = tokens[0]!.length;
    if (s === 0 || tokens.some((t) => t.length !== s)) throw fail('BAD_OPTION', 'decoder rows must have the same, non-zero length');
    const P = this.position;
    if (P + s > this.maxLength) throw fail('BAD_OPTION', `decoding past the cache of ${this.maxLength} positions (at ${P} + ${s})`);
    if (P + s > this.capacity) {
      let C = this.capacity;
      while (C < P + s) C *= 2;
      this.resize(B, Math.min(C, this.maxLength), Array.from({ length: B }, (_, i) => i));
    }
    const C = this.capacity;
    const H = spec.hiddenSize;
    const x = this.engine.embed(tokens);
    const rope = spec.attention.rope;
    const { cos, sin } = ropeTables(rope, P, s);
    const counting: ForwardHooks = {
      ...hooks,
      onRouting: (ev) => {
        const m = this.moeOffset.get(ev.layerIndex)!;
        const k = ev.routing.k;
        ev.routing.experts.forEach((e, i) => {
          const row = Math.floor(Math.floor(i / k) / s);
          this.counts[row * this.countsPerRow + m.offset + e]!++;
        });
        hooks?.onRouting?.(ev);
      },
    };
    // Mask [s, C + s]: the cache's first P columns as the causal rule allows, its unused capacity never, then the
    // new tokens causally among themselves.
    const full = causalMask(s, P, attentionWindow(spec));
    const mask = new Float32Array(s * (C + s)).fill(-Infinity);
    for (let i = 0; i < s; i++) {
      mask.set(full.subarray(i * (P + s), i * (P + s) + P), i * (C + s));
      mask.set(full.subarray(i * (P + s) + P, (i + 1) * (P + s)), i * (C + s) + C);
    }
    const ctxBase = {
      bs: tensor.i64From([B, s]),
      cos: tensor.f32(cos, [s, rope.dim]),
      sin: tensor.f32(sin, [s, rope.dim]),
      mask: tensor.f32(mask, [s, C + s]),
      batchIndex: 0,
      tokenOffset: P,
      hooks: counting,
    };
    const [hk, dk, dv] = [this.heads, this.dk, this.dv];
    for (const layer of spec.layers) {
      const cache = this.caches[layer.index]!;
      const past = { key: tensor.f32(cache.key, [B, hk, C, dk]), value: tensor.f32(cache.value, [B, hk, C, dv]) };
      const out = await this.engine.layerStep(layer, x, { ...ctxBase, past });
      this.append(cache.key, out.newKey!, P, s, dk);
      this.append(cache.value, out.newValue!, P, s, dv);
    }
    this.position += s;
    const last = new Float32Array(B * H);
    for (let b = 0; b < B; b++) last.set(x.subarray((b * s + s - 1) * H, (b * s + s) * H), b * H);
    return last;
  }

  /** Write the step's keys [B, heads, s, d] at positions P…P+s−1 of the cache [B, heads, C, d]. */
  private append(buf: Float32Array, t: ort.Tensor, P: number, s: number, d: number): void {
    const src = t.data as Float32Array;
    const n = this.batchSize * this.heads;
    for (let bh = 0; bh < n; bh++) buf.set(src.subarray(bh * s * d, (bh + 1) * s * d), (bh * this.capacity + P) * d);
  }

  /**
   * Append `tokens` (B rows of s tokens each) and return the logits of each row's last new token [B × vocab].
   * `hooks` see the routing of every layer (tokens are row-major: row b's tokens are b·s … b·s+s−1).
   */
  async step(tokens: Int32Array[], hooks?: ForwardHooks): Promise<Float32Array> {
    return this.engine.logits(await this.advance(tokens, hooks));
  }

  /**
   * Like step, but returns only each row's k most likely next tokens with their log-probabilities (descending), so
   * the vocabulary-sized distribution never reaches JavaScript.
   */
  async stepTop(tokens: Int32Array[], k: number, hooks?: ForwardHooks): Promise<{ logp: Float32Array; ids: Int32Array; k: number }> {
    return this.engine.topLogProbs(await this.advance(tokens, hooks), k);
  }

  /** Expert selections of row b's tokens so far, for MoE layer `layer` ([E]). */
  expertCounts(row: number, layer: number): Int32Array {
    const m = this.moeOffset.get(layer);
    if (!m) throw fail('BAD_OPTION', `layer ${layer} is not a MoE layer`);
    const at = row * this.countsPerRow + m.offset;
    return this.counts.subarray(at, at + m.experts);
  }

  /** σ of row b's expert usage: per MoE layer the sample std of usage shares, averaged over layers (as the balance report). */
  sigma(row: number): number {
    let sum = 0;
    for (const layer of this.moeOffset.keys()) sum += sigma(this.expertCounts(row, layer));
    return this.moeOffset.size ? sum / this.moeOffset.size : 0;
  }

  /** Keep rows `rows` (in this order, repeats allowed) of the caches and counts: the new batch size is rows.length. */
  reorder(rows: ArrayLike<number>): void {
    const B = this.batchSize;
    const n = rows.length;
    for (let i = 0; i < n; i++) if (!(rows[i]! >= 0 && rows[i]! < B)) throw fail('BAD_OPTION', `reorder row ${rows[i]} is outside the batch of ${B}`);
    let identity = n === B;
    for (let i = 0; identity && i < n; i++) identity = rows[i] === i;
    if (identity) return;
    const counts = new Int32Array(n * this.countsPerRow);
    for (let i = 0; i < n; i++) counts.set(this.counts.subarray(rows[i]! * this.countsPerRow, (rows[i]! + 1) * this.countsPerRow), i * this.countsPerRow);
    this.counts = counts;
    if (n !== B) {
      this.resize(n, this.capacity, rows);
      return;
    }
    // In place: only rows whose source changes are written, from copies of the sources they need.
    const P = this.position;
    const hk = this.heads;
    const sources = [...new Set(Array.from(rows).filter((r, i) => r !== i))];
    for (const c of this.caches)
      for (const [buf, d] of [[c.key, this.dk], [c.value, this.dv]] as const) {
        const block = hk * this.capacity * d; // one row
        const saved = new Map(sources.map((r) => [r, buf.slice(r * block, r * block + block)]));
        for (let i = 0; i < n; i++) {
          if (rows[i] === i) continue;
          const from = saved.get(rows[i]!)!;
          for (let h = 0; h < hk; h++) buf.set(from.subarray(h * this.capacity * d, (h * this.capacity + P) * d), (i * hk + h) * this.capacity * d);
        }
      }
  }
}
