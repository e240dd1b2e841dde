/**
 * Incremental decoding with a KV cache, batched over B sequences (beams) that advance together. Unlike
 * ForwardEngine.run (layer-major), each step runs every layer for the new tokens, so it is meant for models whose
 * weights stay resident (or for short generations). MLA caches the expanded keys/values per head.
 * Beam search keeps and duplicates rows with `reorder`.
 */
import * as ort from 'onnxruntime-node';
import { ropeTables } from '../architectures/_rope.js';
import { fail } from '../errors.js';
import { tensor } from '../graph/session.js';
import { attentionWindow, causalMask, type ForwardEngine, type ForwardHooks } from './forward.js';

interface LayerCache {
  key: ort.Tensor;
  value: ort.Tensor;
}

export class Decoder {
  private caches: LayerCache[];
  /** Number of tokens already in the cache. */
  position = 0;

  constructor(
    private readonly engine: ForwardEngine,
    public batchSize: number,
  ) {
    const a = engine.spec.attention;
    const [heads, dk, dv] =
      a.kind === 'mha' ? [a.numKvHeads, a.headDim, a.headDim] : [a.numHeads, a.qkNopeHeadDim + a.qkRopeHeadDim, a.vHeadDim];
    const empty = (d: number) => tensor.f32(new Float32Array(0), [batchSize, heads, 0, d]);
    this.caches = engine.spec.layers.map(() => ({ key: empty(dk), value: empty(dv) }));
  }

  /**
   * Append `tokens` (B rows of s tokens each) and return the logits of each row's last new token [B × vocab].
   * `hooks` see the routing of every layer (tokens are row-major: row b's tokens are b·s … b·s+s−1).
   */
  async step(tokens: Int32Array[], hooks?: ForwardHooks): Promise<Float32Array> {
    const { spec } = this.engine;
    const B = this.batchSize;
    if (tokens.length !== B) throw fail('BAD_OPTION', `decoder step needs ${B} rows, got ${tokens.length}`);
    const s = tokens[0]!.length;
    if (s === 0 || tokens.some((t) => t.length !== s)) throw fail('BAD_OPTION', 'decoder rows must have the same, non-zero length');
    const H = spec.hiddenSize;
    const x = this.engine.embed(tokens);
    const rope = spec.attention.rope;
    const { cos, sin } = ropeTables(rope, this.position, s);
    const ctxBase = {
      bs: tensor.i64From([B, s]),
      cos: tensor.f32(cos, [s, rope.dim]),
      sin: tensor.f32(sin, [s, rope.dim]),
      mask: tensor.f32(causalMask(s, this.position, attentionWindow(spec)), [s, this.position + s]),
      batchIndex: 0,
      tokenOffset: this.position,
      hooks,
    };
    for (const layer of spec.layers) {
      const cache = this.caches[layer.index]!;
      const out = await this.engine.layerStep(layer, x, { ...ctxBase, past: cache });
      this.caches[layer.index] = { key: out.presentKey!, value: out.presentValue! };
    }
    this.position += s;
    const last = new Float32Array(B * H);
    for (let b = 0; b < B; b++) last.set(x.subarray((b * s + s - 1) * H, (b * s + s) * H), b * H);
    return this.engine.logits(last);
  }

  /** Keep cache rows `rows` (in this order, repeats allowed): the new batch size is rows.length. */
  reorder(rows: number[]): void {
    const pick = (t: ort.Tensor) => {
      const [B, h, L, d] = t.dims as number[];
      const per = h! * L! * d!;
      const src = t.data as Float32Array;
      const dst = new Float32Array(rows.length * per);
      rows.forEach((r, i) => {
        if (r < 0 || r >= B!) throw fail('BAD_OPTION', `reorder row ${r} is outside the batch of ${B}`);
        dst.set(src.subarray(r * per, (r + 1) * per), i * per);
      });
      return tensor.f32(dst, [rows.length, h!, L!, d!]);
    };
    this.caches = this.caches.map((c) => ({ key: pick(c.key), value: pick(c.value) }));
    this.batchSize = rows.length;
  }
}
