/**
 * Incremental decoding of a batch of B rows (beams) that advance together, for generation and beam search.
 * Unlike ForwardEngine.run (layer-major), each step runs every layer for the new tokens, so it is meant for models
 * whose weights stay resident (or for short generations).
 *
 * The batch owns its state and reorders it as one: per layer a preallocated KV cache, position-major
 * [maxLength, B, heads, d] (MLA caches the expanded per-head keys/values), so a step appends by copying the new
 * keys into place and hands the graph a contiguous view of the first P positions — the prefix is never
 * recomputed or re-concatenated in JavaScript — and per row the expert selections of its tokens so far in every
 * MoE layer (the routing used: natural unless the caller's hooks bias it). `reorder` keeps, duplicates or drops
 * rows of both together, as beam search does after each step.
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
  private caches: LayerCache[];
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
    this.caches = this.allocate(batchSize);
    this.counts = new Int32Array(batchSize * offset);
  }

  private allocate(B: number): LayerCache[] {
    const per = this.maxLength * B * this.heads;
    return this.engine.spec.layers.map(() => ({ key: new Float32Array(per * this.dk), value: new Float32Array(per * this.dv) }));
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
    const ctxBase = {
      bs: tensor.i64From([B, s]),
      cos: tensor.f32(cos, [s, rope.dim]),
      sin: tensor.f32(sin, [s, rope.dim]),
      mask: tensor.f32(causalMask(s, P, attentionWindow(spec)), [s, P + s]),
      batchIndex: 0,
      tokenOffset: P,
      hooks: counting,
    };
    const [hk, dk, dv] = [this.heads, this.dk, this.dv];
    for (const layer of spec.layers) {
      const cache = this.caches[layer.index]!;
      const past = {
        key: tensor.f32(cache.key.subarray(0, P * B * hk * dk), [P, B, hk, dk]),
        value: tensor.f32(cache.value.subarray(0, P * B * hk * dv), [P, B, hk, dv]),
      };
      const out = await this.engine.layerStep(layer, x, { ...ctxBase, past });
      this.append(cache.key, out.newKey!, P, s, dk);
      this.append(cache.value, out.newValue!, P, s, dv);
    }
    this.position += s;
    const last = new Float32Array(B * H);
    for (let b = 0; b < B; b++) last.set(x.subarray((b * s + s - 1) * H, (b * s + s) * H), b * H);
    return last;
  }

  /** Copy the step's keys [B, heads, s, d] to positions P…P+s−1 of the position-major cache [L, B, heads, d]. */
  private append(buf: Float32Array, t: ort.Tensor, P: number, s: number, d: number): void {
    const src = t.data as Float32Array;
    const B = this.batchSize;
    const hk = this.heads;
    if (s === 1) {
      buf.set(src, P * B * hk * d); // [B, heads, 1, d] is already [B, heads, d]
      return;
    }
    for (let b = 0; b < B; b++)
      for (let h = 0; h < hk; h++)
        for (let j = 0; j < s; j++) {
          const from = ((b * hk + h) * s + j) * d;
          buf.set(src.subarray(from, from + d), (((P + j) * B + b) * hk + h) * d);
        }
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
    const P = this.position;
    const next = n === B ? null : this.allocate(n);
    const permute = (buf: Float32Array, into: Float32Array, d: number) => {
      const w = this.heads * d;
      const scratch = new Float32Array(B * w);
      for (let p = 0; p < P; p++) {
        scratch.set(buf.subarray(p * B * w, (p + 1) * B * w));
        for (let i = 0; i < n; i++) into.set(scratch.subarray(rows[i]! * w, (rows[i]! + 1) * w), (p * n + i) * w);
      }
    };
    this.caches.forEach((c, l) => {
      const dst = next ? next[l]! : c;
      permute(c.key, dst.key, this.dk);
      permute(c.value, dst.value, this.dv);
    });
    if (next) this.caches = next;
    const counts = new Int32Array(n * this.countsPerRow);
    for (let i = 0; i < n; i++) counts.set(this.counts.subarray(rows[i]! * this.countsPerRow, (rows[i]! + 1) * this.countsPerRow), i * this.countsPerRow);
    this.counts = counts;
    this.batchSize = n;
  }
}
