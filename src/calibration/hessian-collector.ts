/**
 * Which Hessians a layer needs, fed from the engine's captured activations. Names (safetensors layout of
 * `calibrate --save-hessians`, one file per decoder layer, float32, sums not averages):
 *   layers.L.attn_input.{xtx}                     q/k/v (MLA: q_proj or q_a_proj, kv_a_proj_with_mqa) input  [H × H]
 *   layers.L.o_proj_input.{xtx}                   o_proj input                                               [heads·dv]²
 *   layers.L.q_b_proj_input / kv_b_proj_input     MLA inner projections' inputs                             [rank]²
 *   layers.L.ffn_input.{xtx}                      router, shared expert / dense MLP gate+up input           [H × H]
 *   layers.L.mlp.down_proj_input.{xtx}            dense MLP down_proj input                                 [I × I]
 *   layers.L.experts.E.gate_up_input.{xtx,xtcx}   routed expert E gate/up input: plain and affinity-weighted [H × H]
 *   layers.L.experts.E.down_input.{xtx,xtcx}      routed expert E down_proj input                           [I × I]
 *   layers.L.shared_expert.down_input.{xtx[,xtcx]}  shared expert down_proj input                           [S × S]
 *   layers.L.shared_expert.gate_up_input.{xtcx}   Qwen2-MoE: ffn input weighted by sigmoid(shared_expert_gate·x)
 * Each key also has `.tokens` (rows accumulated) and, when weighted, `.weight_sum` (Σ c).
 * The affinity c of a token for an expert is exactly its combine weight (after renormalisation and scaling).
 */
import type { LayerSpec, ModelSpec } from '../architectures/types.js';
import type { TensorToWrite } from '../checkpoint/safetensors.js';
import { tensorBytes } from '../checkpoint/safetensors.js';
import type { ActivationsEvent } from '../engine/forward.js';
import type { SessionPool } from '../graph/session.js';
import { gatherRows, HessianAccumulator } from './hessian.js';

interface Slot {
  acc: HessianAccumulator;
  /** Which captured input feeds it, and how rows/weights are chosen. */
  source: string;
  expert?: number;
  weightBy?: 'affinity' | 'shared_gate';
}

/** Hessian accumulators for one decoder layer. */
export class LayerHessians {
  readonly slots = new Map<string, Slot>();

  /**
   * `only`: keep just these Hessian keys (quantize collects one group of modules per pass). `weightedOnly`: weighted
   * keys keep only Σ c x xᵀ (AGQ never reads their plain sums).
   */
  constructor(
    pool: SessionPool,
    spec: ModelSpec,
    readonly layer: LayerSpec,
    only?: ReadonlySet<string>,
    weightedOnly = false,
  ) {
    const L = `layers.${layer.index}`;
    const H = spec.hiddenSize;
    const a = spec.attention;
    const add = (key: string, dim: number, source: string, extra: Partial<Slot> = {}) => {
      const weighted = Boolean(extra.weightBy);
      if (!only || only.has(key)) this.slots.set(key, { acc: new HessianAccumulator(pool, dim, weighted, !(weighted && weightedOnly)), source, ...extra });
    };
    add(`${L}.attn_input`, H, 'attn');
    if (a.kind === 'mha') add(`${L}.o_proj_input`, a.numHeads * a.headDim, 'o');
    else {
      add(`${L}.o_proj_input`, a.numHeads * a.vHeadDim, 'o');
      if (a.qLoraRank !== null) add(`${L}.q_b_proj_input`, a.qLoraRank, 'qB');
      add(`${L}.kv_b_proj_input`, a.kvLoraRank, 'kvB');
    }
    add(`${L}.ffn_input`, H, 'ffn');
    const f = layer.ffn;
    if (f.kind === 'dense') {
      add(`${L}.mlp.down_proj_input`, f.intermediateSize, 'dense.down');
      return;
    }
    for (let e = 0; e < f.routing.numExperts; e++) {
      add(`${L}.experts.${e}.gate_up_input`, H, 'ffn', { expert: e, weightBy: 'affinity' });
      add(`${L}.experts.${e}.down_input`, f.expertIntermediateSize, `expert.${e}.down`, { expert: e, weightBy: 'affinity' });
    }
    if (f.shared) {
      const gated = f.shared.gate ? { weightBy: 'shared_gate' as const } : {};
      add(`${L}.shared_expert.down_input`, f.shared.intermediateSize, 'shared.down', gated);
      if (f.shared.gate) add(`${L}.shared_expert.gate_up_input`, H, 'ffn', gated);
    }
  }

  /** Accumulate one batch. */
  async add(ev: ActivationsEvent): Promise<void> {
    for (const slot of this.slots.values()) {
      const x = ev.inputs[slot.source];
      if (!x) continue;
      if (slot.expert !== undefined) {
        const rows = ev.rows![slot.expert]!;
        const c = ev.rowWeights![slot.expert]!;
        // Down inputs already arrive as this expert's rows, in `rows` order; gate/up inputs are gathered here.
        const input = slot.source === 'ffn' ? gatherRows(x, slot.acc.dim, rows) : x;
        await slot.acc.add(input, c);
      } else if (slot.weightBy === 'shared_gate') {
        await slot.acc.add(x, ev.inputs['shared_gate']!);
      } else {
        await slot.acc.add(x);
      }
    }
  }

  /** Entries for writeSafetensors (keys as in the header comment). */
  tensors(): TensorToWrite[] {
    const out: TensorToWrite[] = [];
    for (const [key, { acc }] of this.slots) {
      const d = acc.dim;
      out.push({ name: `${key}.xtx`, dtype: 'F32', shape: [d, d], data: tensorBytes(acc.xtx) });
      if (acc.weighted) {
        out.push({ name: `${key}.xtcx`, dtype: 'F32', shape: [d, d], data: tensorBytes(acc.xtcx!) });
        out.push({ name: `${key}.weight_sum`, dtype: 'F64', shape: [], data: tensorBytes(Float64Array.of(acc.weightSum)) });
      }
      out.push({ name: `${key}.tokens`, dtype: 'I64', shape: [], data: tensorBytes(BigInt64Array.of(BigInt(acc.tokens))) });
    }
    return out;
  }
}

/** Bytes `--save-hessians` will write for a model (all layers). */
export function hessianBytes(spec: ModelSpec): number {
  let floats = 0;
  const H = spec.hiddenSize;
  const a = spec.attention;
  for (const layer of spec.layers) {
    floats += H * H * 2; // attn_input, ffn_input
    if (a.kind === 'mha') floats += (a.numHeads * a.headDim) ** 2;
    else floats += (a.numHeads * a.vHeadDim) ** 2 + (a.qLoraRank ?? 0) ** 2 + a.kvLoraRank ** 2;
    const f = layer.ffn;
    if (f.kind === 'dense') floats += f.intermediateSize ** 2;
    else {
      floats += f.routing.numExperts * 2 * (H * H + f.expertIntermediateSize ** 2);
      if (f.shared) floats += f.shared.intermediateSize ** 2 * (f.shared.gate ? 2 : 1) + (f.shared.gate ? 2 * H * H : 0);
    }
  }
  return floats * 4;
}
